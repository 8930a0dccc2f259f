"""The ONE training loop every stage uses (and pretraining): epochs, validation, the best epoch, early stop.

A stage hands the :class:`Trainer` a model, batch iterators, an optimiser and a scheduler factory; the loop trains
with cross-entropy, evaluates weighted F1 on the validation split after every epoch, keeps the best weights (never
looking at the test split), stops early when validation stops improving, and restores the best weights at the end.

On real hardware it also runs:
  - mixed precision (``precision: bf16 | fp16``; autocast, and a GradScaler for fp16, unscaled before clipping);
  - gradient accumulation (``accumulate: N``): the loss of an optimiser step is the sum over the real utterances of
    its N batches divided by their count, so N batches of B give the gradient of one batch of N*B;
  - data-parallel training on several processes through Hugging Face Accelerate (``accelerate launch`` or
    ``torchrun``): each global batch is sharded over the processes, gradients are all-reduced, validation
    predictions are gathered so that weighted F1 is computed on the whole split on every process.

Batches are dicts:
    inputs   dict of tensors passed to ``model(**inputs)``; batch-major (dim 0 = utterances or conversations)
    labels   LongTensor (B,) or (B, T); NO_LABEL (-100) where there is no label (padding, unlabelled)
    mask     optional BoolTensor with the shape of ``labels``: the real utterances (default: all)
    utterance_ids  list of the ids of the real utterances, in row-major order of ``mask``
Models return an output object with ``logits`` (..., C) and ``embeddings`` (..., D) over the same leading shape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from merits.data.manifest import NO_LABEL
from merits.distributed import shard
from merits.errors import ConfigError
from merits.faults import kill_point
from merits.metrics import weighted_f1
from merits.progress import progress
from merits.runtime import Runtime
from merits.training.checkpoint import rng_state, set_rng_state, swap_in
from merits.training.prediction import PRECISIONS, Predictions, autocast, predict, to_device

log = logging.getLogger("merits")
IGNORE = NO_LABEL  # the loss' ignore_index: the one "no label" class id (merits.data.manifest.NO_LABEL)


@dataclass
class TrainerConfig:
    """What the loop needs of a stage's config; every stage config extends it (with its own defaults)."""

    epochs: int = 10                           # at most this many passes over the training data (see patience)
    batch_size: int = 32
    lr: float = 1e-3                           # AdamW learning rate
    weight_decay: float = 1e-4                 # AdamW weight decay
    patience: int = 3                          # epochs without validation wF1 gain before stopping
    precision: str = "fp32"                    # fp32 | bf16 | fp16 (autocast; fp16 with a GradScaler)
    accumulate: int = 1                        # batches per optimiser step
    grad_clip: float | None = 1.0              # max gradient norm; null = no clipping

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patience", "accumulate"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r} is not one of {list(PRECISIONS)}")


@dataclass
class FitResult:
    best_epoch: int
    best_validation_wf1: float
    history: list = field(default_factory=list)  # per epoch: train_loss, validation_wf1, seconds
    seconds_per_epoch: float = 0.0
    optimizer_steps: int = 0


SchedulerFactory = Callable[[torch.optim.Optimizer, int], object]  # (optimizer, total optimiser steps) -> scheduler
# (model output, batch, device) -> (loss summed over the batch's real items, {name: summed part, for logs})
LossFn = Callable[[object, dict, torch.device], tuple[torch.Tensor, dict]]
_CROSS_ENTROPY = nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="sum")


def classification_loss(out, batch: dict, device) -> tuple[torch.Tensor, dict]:
    """Cross-entropy summed over the labelled items (unlabelled ones carry IGNORE), on fp32 logits."""
    logits = out.logits.float()
    return _CROSS_ENTROPY(logits.reshape(-1, logits.shape[-1]), batch["labels"].to(device).reshape(-1)), {}


class Trainer:
    """Trains one model with the settings of a :class:`TrainerConfig` on this process' device(s)."""

    def __init__(self, cfg: TrainerConfig, runtime: "Runtime | str | torch.device" = "auto", desc: str = "train"):
        self.cfg, self.desc = cfg, desc
        self.runtime = Runtime.of(runtime)
        self.dist, self.device = self.runtime.dist, self.runtime.device

    def predict(self, model: nn.Module, batches: list[dict], desc: str | None = None) -> Predictions:
        """Predictions on every process for all ``batches``: each process predicts every world-th batch and the
        parts are gathered (so that scores are computed on the whole split)."""
        mine = batches[self.dist.rank::self.dist.world]
        local = predict(model, mine, self.device, desc or f"{self.desc} predict", self.cfg.precision)
        return Predictions.concat(self.dist.gather(local)) if self.dist.world > 1 else local

    def step(self, net: nn.Module, model: nn.Module, group: list[dict], n: int, loss_of: "LossFn",
             optimizer: torch.optim.Optimizer, scaler, sched=None) -> tuple[torch.Tensor, dict]:
        """One optimiser step over ``group`` (``accumulate`` global batches) whose loss is summed over its ``n``
        real items (all processes) and divided by ``n``: the same gradient however the step is split into
        batches and processes. ``loss_of(out, batch, device) -> (summed loss, {name: summed part})``. Returns this
        process' summed loss and parts, on the device (no host sync)."""
        cfg, dev, dist = self.cfg, self.device, self.dist
        total, parts = torch.zeros((), device=dev), {}
        for j, batch in enumerate(group):
            last = j == len(group) - 1
            if dist.world > 1:
                batch = shard(batch, dist.rank, dist.world)
            # DDP averages gradients over processes: scale by world so that the result is sum / n
            sync = contextlib.nullcontext() if last or dist.world == 1 else net.no_sync()
            with sync:
                with autocast(dev, cfg.precision):
                    out = net(**to_device(batch["inputs"], dev))
                loss, named = loss_of(out, batch, dev)
                scaler.scale(loss * (dist.world / n)).backward()
            total += loss.detach()
            for k, v in named.items():
                parts[k] = parts.get(k, 0) + v.detach()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        return total, parts

    def fit(self, model: nn.Module, train_batches: Callable[[int], Iterable[dict]],
            validation_batches: Callable[[], list[dict]], optimizer: torch.optim.Optimizer,
            scheduler: SchedulerFactory | None = None, resume: Path | None = None,
            checkpoint_seconds: float | None = None) -> FitResult:
        """Train ``model`` in place and leave it holding the weights of the best validation epoch.

        train_batches(epoch) returns that epoch's (shuffled) global batches; validation_batches() the validation
        ones. The scheduler is built once the number of optimiser steps is known and stepped once per step.

        resume: a directory for the loop's state (weights, best weights, optimiser, scheduler, scaler, RNG, counters,
        history; written atomically, removed at the end), saved after every epoch and, inside an epoch, every
        ``checkpoint_seconds`` (default ``MERITS_CHECKPOINT_SECONDS`` or 600). A call that finds it goes on where it
        stopped, so a kill loses at most that long, and ends with the weights an uninterrupted run gives: the epochs
        already done are replayed through ``train_batches`` (to advance its shuffling RNG) without training, and an
        epoch cut short skips the steps it had made.
        """
        cfg, dev, dist = self.cfg, self.device, self.dist
        if checkpoint_seconds is None:
            checkpoint_seconds = float(os.environ.get("MERITS_CHECKPOINT_SECONDS", CHECKPOINT_SECONDS))
        model.to(dev)
        net = dist.wrap(model)
        scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
        sched, steps = None, 0
        best_state, best_wf1, best_epoch, stale = None, -1.0, -1, 0
        history, seconds = [], []
        saved = _load_epochs(resume) if resume is not None else None
        if resume is not None and saved is None and (resume.parent / ".resumed").is_file():  # runs.RESUMED
            log.info("%s: no saved training state in %s (killed before its first save): training starts at epoch 1",
                     self.desc, resume)

        def save(done_epochs: int, group: int, total: float, count: int) -> None:
            if dist.is_main:
                _save_epochs(resume, {"epoch": done_epochs, "group": group, "total": total, "count": count,
                                      "steps": steps, "best_wf1": best_wf1, "best_epoch": best_epoch, "stale": stale,
                                      "history": history, "seconds": seconds}, model, best_state, optimizer, sched,
                             scaler)
            dist.barrier()

        for epoch in range(cfg.epochs):
            if saved is not None and epoch < saved["epoch"]:  # done before the kill: only advance the shuffling
                batches = list(train_batches(epoch))
                if scheduler is not None and sched is None:
                    sched = scheduler(optimizer, cfg.epochs * len(self._groups(batches)))
                continue
            start = time.perf_counter()
            batches = list(train_batches(epoch))
            groups = self._groups(batches)
            if scheduler is not None and sched is None:
                sched = scheduler(optimizer, cfg.epochs * len(groups))
            total = torch.zeros((), device=dev)  # summed loss of the epoch, kept on the device: no per-step sync
            count, first = 0, 0
            if saved is not None:  # the state saved before the kill: at this epoch's start or inside it
                (steps, best_wf1, best_epoch, stale, history, seconds, best_state, done, count,
                 first) = _restore_epochs(saved, model, optimizer, sched, scaler, dev)
                total += done
                log.info("%s: resuming %s from %s", self.desc, f"after epoch {epoch}" if not first else
                         f"in epoch {epoch + 1} after {first} of its {len(groups)} steps", resume)
                saved = None
            model.train()
            last_save = time.perf_counter()
            bar = progress(groups[first:], desc=f"{self.desc} epoch {epoch + 1}/{cfg.epochs}", initial=first,
                           total=len(groups))
            for g, group in enumerate(bar, start=first):
                # the real utterances of the whole step over all processes: known on the host, before sharding
                n = sum(int((b["labels"] != IGNORE).sum()) for b in group)
                if n == 0:
                    continue
                total += self.step(net, model, group, n, classification_loss, optimizer, scaler, sched)[0]
                count += n
                steps += 1
                if g % 50 == 49:  # a host sync now and then, for the progress bar only
                    bar.set_postfix(loss=f"{float(total) * dist.world / max(count, 1):.4f}")
                if resume is not None and g % CHECK_EVERY == CHECK_EVERY - 1 and g + 1 < len(groups):
                    due = time.perf_counter() - last_save >= checkpoint_seconds
                    if dist.gather(due)[0]:  # rank 0 decides for all: every process saves at the same step
                        save(epoch, g + 1, float(total), count)
                        last_save = time.perf_counter()
            train_seconds = time.perf_counter() - start
            # this process' summed loss over its shards; all of them: the mean over the real utterances
            epoch_loss = sum(dist.gather(float(total))) / max(count, 1)
            pred = self.predict(model, validation_batches(), f"{self.desc} validation")
            wf1 = weighted_f1(pred.label_ids, pred.predicted)
            seconds.append(train_seconds)
            history.append({"epoch": epoch + 1, "train_loss": epoch_loss, "validation_wf1": wf1,
                            "train_seconds": train_seconds})
            log.info("%s epoch %d: loss %.4f, validation wF1 %.4f (%.1fs)", self.desc, epoch + 1, epoch_loss, wf1,
                     train_seconds)
            if wf1 > best_wf1:
                best_wf1, best_epoch, stale = wf1, epoch + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                stale += 1
            if resume is not None and epoch + 1 < cfg.epochs and stale < cfg.patience:
                save(epoch + 1, 0, 0.0, 0)
            if stale >= cfg.patience:
                log.info("%s: early stop after epoch %d (best %d)", self.desc, epoch + 1, best_epoch)
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        if resume is not None and dist.is_main:
            shutil.rmtree(resume, ignore_errors=True)  # the stage saves the trained model itself
        return FitResult(best_epoch, best_wf1, history, float(np.mean(seconds)) if seconds else 0.0, steps)

    def _groups(self, batches: list[dict]) -> list[list[dict]]:
        """An epoch's batches as optimiser steps of ``accumulate`` batches each."""
        if self.dist.world > 1:  # every process needs a non-empty shard of every batch it steps on
            batches = [b for b in batches if len(b["labels"]) >= self.dist.world]
        return [batches[i:i + self.cfg.accumulate] for i in range(0, len(batches), self.cfg.accumulate)]


CHECKPOINT_SECONDS = 600.0  # inside an epoch, the loop's state is saved at least this often (resume=...)
CHECK_EVERY = 10  # steps between two looks at the clock (a collective among several processes)
EPOCH_STATE = "epoch_state.pt"   # optimiser, scheduler, scaler, RNG, counters, history (tensors + plain data)
EPOCH_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"


def _save_epochs(directory: Path, counters: dict, model, best_state, optimizer, sched, scaler) -> None:
    """The loop's state after an epoch, written beside the previous one and swapped in (never half of one)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / EPOCH_WEIGHTS))
        if best_state is not None:
            save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / BEST_WEIGHTS))
        torch.save({**counters, "optimizer": optimizer.state_dict(),
                    "scheduler": sched.state_dict() if sched else None, "scaler": scaler.state_dict(),
                    "rng": rng_state()}, tmp / EPOCH_STATE)

    swap_in(Path(directory), write)
    kill_point("trainer.epoch_saved")


def _load_epochs(directory: Path) -> dict | None:
    for candidate in (directory, directory.with_name(directory.name + ".old")):  # .old: killed mid-swap
        if (candidate / EPOCH_STATE).is_file() and (candidate / EPOCH_WEIGHTS).is_file():
            state = torch.load(candidate / EPOCH_STATE, map_location="cpu", weights_only=True)
            return {**state, "directory": candidate}
    return None


def _restore_epochs(saved: dict, model, optimizer, sched, scaler, device):
    from merits.errors import load_safetensors

    where = saved["directory"]
    model.load_state_dict(load_safetensors(where / EPOCH_WEIGHTS, "pt", "delete it to start over"))
    model.to(device)
    best = where / BEST_WEIGHTS
    best_state = load_safetensors(best, "pt", "delete it to start over") if best.is_file() else None
    optimizer.load_state_dict(saved["optimizer"])
    if sched is not None and saved["scheduler"] is not None:
        sched.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    return (int(saved["steps"]), float(saved["best_wf1"]), int(saved["best_epoch"]), int(saved["stale"]),
            list(saved["history"]), list(saved["seconds"]), best_state, float(saved.get("total", 0.0)),
            int(saved.get("count", 0)), int(saved.get("group", 0)))
