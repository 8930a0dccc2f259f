"""The ONE training loop every stage uses.

A stage hands it a model, batch iterators and an optimiser; the loop trains with cross-entropy, evaluates
weighted F1 on the validation split after every epoch, keeps the best weights (never looking at the test
split), stops early when validation stops improving, and restores the best weights at the end.

Batches are dicts:
    inputs   dict of tensors passed to ``model(**inputs)``
    labels   LongTensor (B,) or (B, T); -100 where there is no label (padding)
    mask     optional BoolTensor with the shape of ``labels``: the real utterances (default: all)
    utterance_ids  list of the ids of the real utterances, in row-major order of ``mask``
Models return an output object with ``logits`` (..., C) and ``embeddings`` (..., D) over the same leading shape.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from merits.data.manifest import NO_LABEL
from merits.metrics import weighted_f1

log = logging.getLogger("merits")
IGNORE = NO_LABEL  # the loss' ignore_index: the one "no label" class id (merits.data.manifest.NO_LABEL)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def progress(iterable, **kwargs):
    """tqdm that stays quiet when MERITS_QUIET is set (tests, benchmarks writing logs)."""
    return tqdm(iterable, disable=bool(os.environ.get("MERITS_QUIET")), dynamic_ncols=True, leave=False, **kwargs)


def _to(batch_inputs: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch_inputs.items()}


@dataclass
class Predictions:
    utterance_ids: list
    labels: np.ndarray       # (N,) class ids, -100 where unknown
    logits: np.ndarray       # (N, C)
    embeddings: np.ndarray   # (N, D)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(-1)


@dataclass
class FitResult:
    best_epoch: int
    best_validation_wf1: float
    history: list = field(default_factory=list)  # per epoch: train_loss, validation_wf1, seconds
    seconds_per_epoch: float = 0.0


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[dict], device, desc: str = "predict") -> Predictions:
    """Run the model over batches; gather logits and embeddings of the real utterances only."""
    model.eval()
    ids, labels, logits, embeddings = [], [], [], []
    for batch in progress(batches, desc=desc):
        out = model(**_to(batch["inputs"], device))
        lab = batch["labels"]
        mask = batch.get("mask", torch.ones_like(lab, dtype=torch.bool))
        logits.append(out.logits[mask.to(device)].float().cpu())        # (n_real, C)
        embeddings.append(out.embeddings[mask.to(device)].float().cpu())  # (n_real, D)
        labels.append(lab[mask])
        ids.extend(batch["utterance_ids"])
    return Predictions(ids, torch.cat(labels).numpy(), torch.cat(logits).numpy(), torch.cat(embeddings).numpy())


def fit(
    model: nn.Module,
    train_batches: Callable[[int], Iterable[dict]],
    validation_batches: Callable[[], Iterable[dict]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    patience: int,
    device,
    scheduler=None,
    class_weights: torch.Tensor | None = None,
    grad_clip: float | None = 1.0,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` in place and leave it holding the weights of the best validation epoch.

    train_batches(epoch) returns that epoch's (shuffled) batches; validation_batches() the validation ones.
    """
    model.to(device)
    loss_fn = nn.CrossEntropyLoss(weight=None if class_weights is None else class_weights.to(device), ignore_index=IGNORE)
    best_state, best_wf1, best_epoch, stale = None, -1.0, -1, 0
    history, seconds = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        bar = progress(train_batches(epoch), desc=f"{desc} epoch {epoch + 1}/{epochs}")
        for batch in bar:
            out = model(**_to(batch["inputs"], device))
            labels = batch["labels"].to(device)
            loss = loss_fn(out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            n = int((labels != IGNORE).sum())
            total, count = total + loss.item() * n, count + n
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        train_seconds = time.perf_counter() - start
        pred = predict(model, validation_batches(), device, desc=f"{desc} validation")
        wf1 = weighted_f1(pred.labels, pred.predicted)
        seconds.append(train_seconds)
        history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), "validation_wf1": wf1,
                        "train_seconds": train_seconds})
        log.info("%s epoch %d: loss %.4f, validation wF1 %.4f (%.1fs)", desc, epoch + 1, total / max(count, 1), wf1, train_seconds)
        if wf1 > best_wf1:
            best_wf1, best_epoch, stale = wf1, epoch + 1, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                log.info("%s: early stop after epoch %d (best %d)", desc, epoch + 1, best_epoch)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(best_epoch, best_wf1, history, float(np.mean(seconds)) if seconds else 0.0)


def linear_warmup(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up to the base learning rate, then linear decay to zero."""
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["FitResult", "Predictions", "fit", "linear_warmup", "predict", "progress", "resolve_device", "seed_everything"]
