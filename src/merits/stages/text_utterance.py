"""Stage I text: fine-tune the text encoder + a head per utterance; export the utterance embeddings.

``run`` writes into ``out_dir``: checkpoint/ (rebuilds the model alone), embeddings.safetensors (pooled
final-layer embedding + logits of every utterance, keyed by id), predictions.csv, metrics.json,
confusion_test.png. Model selection uses validation weighted F1 only.

Cross-fitting (``stage1_text.crossfit_folds = K >= 2``): a fine-tuned encoder has memorised its training
utterances, so their embeddings are far cleaner than those of unseen utterances, and Stage II, trained on
them, learns to trust the utterance alone and to ignore the conversation. With cross-fitting the training
conversations are split into K folds; K models, each fine-tuned on K-1 folds, give the embeddings of the fold
they did not see. Validation and test embeddings are the mean over the K models (their embedding spaces
share the pretrained starting point). The cost is K models on (K-1)/K of the data each.
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
from merits.training import Predictions, fit, linear_warmup, predict, resolve_device

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


def train_folds(manifest: Manifest, k: int, seed: int) -> list[np.ndarray]:
    """Training rows split into k folds by conversation (a conversation never spans two folds)."""
    train = rows_of(manifest, "train")
    convs = manifest.table["conversation_id"].to_numpy()
    order = np.random.default_rng(seed).permutation(list(dict.fromkeys(convs[train])))
    fold_of = {c: i % k for i, c in enumerate(order)}
    fold = np.array([fold_of[c] for c in convs[train]])
    return [train[fold == i] for i in range(k)]


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


def _mean(preds: list[Predictions]) -> Predictions:
    first = preds[0]
    return Predictions(first.utterance_ids, first.labels, np.mean([p.logits for p in preds], 0),
                       np.mean([p.embeddings for p in preds], 0))


def run(cfg: ExperimentConfig, manifest: Manifest, seed: int, out_dir: Path) -> dict:
    k = cfg.stage1_text.crossfit_folds
    splits = splits_present(manifest)
    log.info("Stage I text on %d utterances%s", len(manifest.table), f", cross-fitted over {k} folds" if k > 1 else "")
    if k <= 1:
        model, result, predict_rows = fine_tune(cfg, manifest, rows_of(manifest, "train"), seed, "Stage I text")
        log.info("Stage I text encoder: %s", describe(model.encoder))
        preds = {s: predict_rows(rows_of(manifest, s), s) for s in splits}
        results = [result]
    else:
        folds = train_folds(manifest, k, seed)
        held_out, others, results = [], {s: [] for s in splits if s != "train"}, []
        for i in range(k):
            rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
            model, result, predict_rows = fine_tune(cfg, manifest, rest, seed + i, f"Stage I text fold {i + 1}/{k}")
            held_out.append(predict_rows(folds[i], "held-out fold"))
            for s in others:
                others[s].append(predict_rows(rows_of(manifest, s), s))
            results.append(result)
            if i < k - 1:
                del model
        preds = {"train": Predictions([u for p in held_out for u in p.utterance_ids],
                                      np.concatenate([p.labels for p in held_out]),
                                      np.concatenate([p.logits for p in held_out]),
                                      np.concatenate([p.embeddings for p in held_out]))}
        preds.update({s: _mean(p) for s, p in others.items()})
    model.save(out_dir / "checkpoint")  # the (last) fine-tuned model: a starting point for later runs
    metrics = export(preds, manifest, out_dir, "Stage I text")
    metrics.update(best_epoch=[r.best_epoch for r in results] if k > 1 else results[0].best_epoch,
                   seconds_per_epoch=float(np.mean([r.seconds_per_epoch for r in results])),
                   history=[r.history for r in results] if k > 1 else results[0].history)
    return metrics
