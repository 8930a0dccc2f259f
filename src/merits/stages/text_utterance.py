"""Stage I text: fine-tune the text encoder + a head per utterance; export the utterance embeddings.

``run`` writes into ``out_dir``: checkpoint/ (rebuilds the model alone), embeddings.safetensors (pooled
final-layer embedding + logits of every utterance, keyed by id), predictions.csv, metrics.json,
confusion_test.png. Model selection uses validation weighted F1 only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from merits.config import ExperimentConfig
from merits.data.manifest import Manifest
from merits.encoders.text import TextBatcher, describe
from merits.models.utterance import TextClassifier, TextClassifierConfig
from merits.stages.common import export, splits_present
from merits.training import fit, linear_warmup, predict, resolve_device

log = logging.getLogger("merits")


def utterance_batches(batcher: TextBatcher, manifest: Manifest, rows: np.ndarray, lengths: np.ndarray,
                      batch_size: int, rng: np.random.Generator | None = None) -> list[dict]:
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
    texts = manifest.table["text"].to_numpy()
    ids = manifest.table["utterance_id"].to_numpy()
    return [{"inputs": batcher.encode(texts[c]), "labels": torch.as_tensor(np.where(labels[c] >= 0, labels[c], -100)),
             "utterance_ids": list(ids[c])} for c in chunks]


def rows_of(manifest: Manifest, split: str) -> np.ndarray:
    return np.flatnonzero(manifest.table["split"].to_numpy() == split)


def fine_tune(cfg: ExperimentConfig, manifest: Manifest, train_rows: np.ndarray, seed: int, desc: str):
    """One Stage I text model fine-tuned on ``train_rows``, selected on validation weighted F1."""
    sc = cfg.stage1_text
    torch.manual_seed(seed)
    model = TextClassifier(TextClassifierConfig(cfg.text_encoder.model, len(manifest.labels), manifest.labels,
                                                cfg.text_encoder.pooling, sc.dropout))
    batcher = TextBatcher(model.tokenizer, cfg.text_encoder.max_length)
    lengths = np.asarray(batcher.lengths(manifest.table["text"]))
    steps = sc.epochs * -(-len(train_rows) // sc.batch_size)
    decay = [p for n, p in model.encoder.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    no_decay = [p for n, p in model.encoder.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([
        {"params": decay, "lr": sc.lr, "weight_decay": sc.weight_decay},
        {"params": no_decay, "lr": sc.lr, "weight_decay": 0.0},
        {"params": model.head.parameters(), "lr": sc.head_lr, "weight_decay": sc.weight_decay},
    ])
    rng = np.random.default_rng(seed)
    validation = utterance_batches(batcher, manifest, rows_of(manifest, "validation"), lengths, sc.eval_batch_size)
    result = fit(model, lambda epoch: utterance_batches(batcher, manifest, train_rows, lengths, sc.batch_size, rng),
                 lambda: validation, optimizer, epochs=sc.epochs, patience=sc.patience,
                 device=resolve_device(cfg.device), scheduler=linear_warmup(optimizer, steps, sc.warmup_ratio), desc=desc)
    predict_rows = lambda rows, what: predict(  # noqa: E731 - a closure over this model's batcher
        model, utterance_batches(batcher, manifest, rows, lengths, sc.eval_batch_size), resolve_device(cfg.device),
        f"{desc} {what}")
    return model, result, predict_rows


def run(cfg: ExperimentConfig, manifest: Manifest, seed: int, out_dir: Path) -> dict:
    log.info("Stage I text on %d utterances", len(manifest.table))
    model, result, predict_rows = fine_tune(cfg, manifest, rows_of(manifest, "train"), seed, "Stage I text")
    log.info("Stage I text encoder: %s", describe(model.encoder))
    model.save(out_dir / "checkpoint")
    preds = {s: predict_rows(rows_of(manifest, s), s) for s in splits_present(manifest)}
    metrics = export(preds, manifest, out_dir, "Stage I text")
    metrics.update(best_epoch=result.best_epoch, seconds_per_epoch=result.seconds_per_epoch, history=result.history)
    return metrics
