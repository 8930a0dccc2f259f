"""Stage I text: fine-tune the text encoder + a head per utterance; export the utterance embeddings.

``run`` writes into ``out_dir``: checkpoint/ (rebuilds the model alone), embeddings.safetensors (pooled
final-layer embedding + logits of every utterance, keyed by id), predictions.csv, metrics.json,
confusion_test.png. Model selection uses validation weighted F1 only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from merits.config import ExperimentConfig, Stage1TextConfig, TextEncoderConfig
from merits.data.manifest import Manifest
from merits.encoders.text import TextBatcher, describe
from merits.models.utterance import TextClassifier, TextClassifierConfig
from merits.stages.common import export, fit_summary, splits_present
from merits.training import IGNORE, FitResult, fit, linear_warmup, predict, resolve_device

log = logging.getLogger("merits")


def utterance_batches(batcher: TextBatcher, manifest: Manifest, token_ids: list, rows: np.ndarray,
                      lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None) -> list[dict]:
    """Batches of the given manifest rows. Training (rng given): shuffled, then sorted by length inside pools of
    50 batches, so that each batch pads little but the batch order stays random. Evaluation: sorted by length."""
    if rng is None:
        groups = [rows[np.argsort(lengths[rows], kind="stable")]]
    else:
        rows = rng.permutation(rows)
        pool = batch_size * 50
        groups = [p[np.argsort(lengths[p], kind="stable")] for p in np.split(rows, range(pool, len(rows), pool))]
    chunks = [g[i:i + batch_size] for g in groups for i in range(0, len(g), batch_size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    labels = manifest.label_ids()
    ids = manifest.table["utterance_id"].to_numpy()
    return [{"inputs": batcher.pad([token_ids[i] for i in c]), "labels": torch.as_tensor(np.where(labels[c] >= 0, labels[c], IGNORE)),
             "utterance_ids": list(ids[c])} for c in chunks]


def rows_of(manifest: Manifest, split: str) -> np.ndarray:
    return np.flatnonzero(manifest.table["split"].to_numpy() == split)


@dataclass
class FineTuned:
    model: TextClassifier
    result: FitResult
    batches: Callable[[str], list[dict]]  # split -> evaluation batches of that split's utterances


def fine_tune(encoder: TextEncoderConfig, sc: Stage1TextConfig, manifest: Manifest, seed: int, device: str = "auto",
              desc: str = "Stage I text") -> FineTuned:
    """Fine-tune ``encoder`` + a linear head on the manifest's train split, selecting the epoch on its validation
    split (weighted F1). Used by Stage I text and by the pseudo-label pretraining ("RoBERTa-FT")."""
    model = TextClassifier(TextClassifierConfig(encoder.model, len(manifest.labels), manifest.labels,
                                                encoder.pooling, sc.dropout))
    log.info("%s on %d utterances: %s", desc, len(manifest.table), describe(model.encoder))
    batcher = TextBatcher(model.tokenizer, encoder.max_length)
    token_ids = batcher.tokenize(manifest.table["text"])  # once; every epoch's batches only pad
    lengths = np.array([len(t) for t in token_ids])        # for length bucketing
    train_rows = rows_of(manifest, "train")
    steps = sc.epochs * -(-len(train_rows) // sc.batch_size)
    decay = [p for n, p in model.encoder.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.encoder.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([
        {"params": decay, "lr": sc.lr, "weight_decay": sc.weight_decay},
        {"params": no_decay, "lr": sc.lr, "weight_decay": 0.0},
        {"params": model.head.parameters(), "lr": sc.head_lr, "weight_decay": sc.weight_decay},
    ])
    rng = np.random.default_rng(seed)

    def batches(rows, size, shuffle=None):
        return utterance_batches(batcher, manifest, token_ids, rows, lengths, size, shuffle)

    validation = batches(rows_of(manifest, "validation"), sc.eval_batch_size)
    result = fit(model, lambda epoch: batches(train_rows, sc.batch_size, rng), lambda: validation, optimizer,
                 epochs=sc.epochs, patience=sc.patience, device=resolve_device(device),
                 scheduler=linear_warmup(optimizer, steps, sc.warmup_ratio), desc=desc)
    return FineTuned(model, result, lambda split: batches(rows_of(manifest, split), sc.eval_batch_size))


def run(cfg: ExperimentConfig, manifest: Manifest, seed: int, out_dir: Path) -> dict:
    desc = "Stage I text"
    tuned = fine_tune(cfg.text_encoder, cfg.stage1_text, manifest, seed, cfg.device, desc)
    tuned.model.save(out_dir / "checkpoint")
    device = resolve_device(cfg.device)
    preds = {s: predict(tuned.model, tuned.batches(s), device, f"{desc} {s}") for s in splits_present(manifest)}
    return {**export(preds, manifest, out_dir, desc), **fit_summary(tuned.result)}
