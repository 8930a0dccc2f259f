"""Parts every stage shares: conversation batching, and exporting predictions, metrics and embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from merits.data.manifest import SPLITS, Manifest
from merits.errors import ConfigError, DataError
from merits.metrics import classification_metrics, plot_confusion
from merits.models.checkpoint import save_model
from merits.runs import EMBEDDINGS, load_embeddings, save_embeddings
from merits.runtime import Runtime
from merits.spreadsheet import write_csv
from merits.stages.base import Replay, Stage, View, save_stage_info
from merits.training import IGNORE, FitResult, Predictions, Trainer, adamw


# what a stage reads of a stage it needs: its embeddings (N, D), its logits (N, C), or both side by side (N, D + C)
READS = ("embeddings", "logits", "both")


def representation(embeddings: np.ndarray, logits: np.ndarray, reads: str = "embeddings") -> np.ndarray:
    if reads == "embeddings":
        return embeddings
    if reads == "logits":
        return logits
    if reads == "both":
        return np.concatenate([embeddings, logits], axis=1)
    raise ValueError(f"reads: {reads!r} is not one of {READS}")


def load_aligned(path: str | Path, manifest: Manifest, reads: str = "embeddings") -> np.ndarray:
    """Rows of a stage's output file in manifest order: (N_manifest, D) (see :data:`READS`). Errors name utterances
    it lacks."""
    ids, arrays = load_embeddings(path)
    if reads != "embeddings" and "logits" not in arrays:
        raise DataError(f"{path} holds no logits: retrain the stage that wrote it")
    rows = representation(arrays["embeddings"], arrays.get("logits"), reads)
    return _in_manifest_order(ids, rows, manifest, str(path))


def align(preds: Predictions, manifest: Manifest, reads: str = "embeddings") -> np.ndarray:
    """A stage's in-memory outputs in manifest order: (N_manifest, D) (see :data:`READS`)."""
    return _in_manifest_order(preds.utterance_ids, representation(preds.embeddings, preds.logits, reads), manifest,
                              "the predictions")


def _in_manifest_order(ids, embeddings: np.ndarray, manifest: Manifest, source: str) -> np.ndarray:
    row = {u: i for i, u in enumerate(ids)}
    missing = [u for u in manifest.table["utterance_id"] if u not in row]
    if missing:
        raise DataError(f"{source} has no embedding for {len(missing)} utterances, e.g. {missing[:5]}")
    return embeddings[[row[u] for u in manifest.table["utterance_id"]]]


def conversation_batches(manifest: Manifest, split: str, features: dict[str, np.ndarray], batch_size: int,
                         rng: np.random.Generator | None = None):
    """Padded conversation batches of one split.

    features: name -> (N_manifest, D) array aligned with manifest rows; each becomes inputs[name] of shape
    (B, T, D). inputs["mask"] is (B, T), True at real utterances. With ``rng`` the conversation order is shuffled.
    """
    table = manifest.table
    labels = manifest.label_ids()
    rows_of = [g.index.to_numpy() for g in manifest.conversations(split)]  # manifest row numbers, in turn order
    order = rng.permutation(len(rows_of)) if rng is not None else np.arange(len(rows_of))
    batches = []
    for start in range(0, len(order), batch_size):
        convs = [rows_of[i] for i in order[start:start + batch_size]]
        longest = max(len(c) for c in convs)
        mask = torch.zeros(len(convs), longest, dtype=torch.bool)
        y = torch.full((len(convs), longest), IGNORE, dtype=torch.long)
        inputs = {name: torch.zeros(len(convs), longest, a.shape[1]) for name, a in features.items()}
        ids = []
        for b, rows in enumerate(convs):
            mask[b, :len(rows)] = True
            y[b, :len(rows)] = torch.as_tensor(np.where(labels[rows] >= 0, labels[rows], IGNORE))
            for name, a in features.items():
                inputs[name][b, :len(rows)] = torch.as_tensor(a[rows])
            ids.extend(table["utterance_id"].to_numpy()[rows])
        inputs["mask"] = mask
        batches.append({"inputs": inputs, "labels": y, "mask": mask, "utterance_ids": ids})
    return batches


def export(preds: dict[str, Predictions], manifest: Manifest, out_dir: Path, stage: str) -> dict:
    """Write a stage's predictions of every split: embeddings (keyed by utterance id), predictions.csv and the
    test confusion PNG. Returns {split: metrics} for the splits that have labels."""
    ids = [u for p in preds.values() for u in p.utterance_ids]
    save_embeddings(out_dir / EMBEDDINGS, ids, np.concatenate([p.embeddings for p in preds.values()]),
                    logits=np.concatenate([p.logits for p in preds.values()]).astype(np.float32))
    names = manifest.labels
    rows = []
    for split, p in preds.items():
        for u, y, yhat, logit in zip(p.utterance_ids, p.label_ids, p.predicted, p.logits):
            prob = np.exp(logit - logit.max())
            rows.append({"utterance_id": u, "split": split, "label": names[y] if y >= 0 else "",
                         "predicted": names[yhat], "confidence": float(prob.max() / prob.sum())})
    write_csv(pd.DataFrame(rows), out_dir / "predictions.csv")
    metrics = {}
    for split, p in preds.items():
        known = p.label_ids >= 0
        if known.any():
            metrics[split] = classification_metrics(p.label_ids[known], p.predicted[known], names)
    if "test" in metrics:
        plot_confusion(metrics["test"], out_dir / "confusion_test.png",
                       f"{stage}: test weighted F1 {metrics['test']['weighted_f1']:.3f}")
    return metrics


def fit_summary(result: FitResult) -> dict:
    """What every stage records about its training beside the scores."""
    return {"best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch,
            "optimizer_steps": result.optimizer_steps, "history": result.history}


def check_reads(value: str, key: str) -> None:
    if value not in READS:
        raise ConfigError(f"{key}: {value!r} is not one of {' | '.join(READS)}")


def train_on_conversations(stage, model, sc, manifest: Manifest, features: dict[str, np.ndarray], seed: int,
                           out_dir: Path, runtime: Runtime, reads: dict[str, str] | None = None) -> dict:
    """Train a conversation-level model (Stage II or III) on frozen per-utterance features and export it.

    features: model argument name -> (N_manifest, D) arrays, fed to ``model(**inputs)`` as (B, T, D) with ``mask``.
    sc: the stage's config (a TrainerConfig: lr, weight_decay, batch_size, epochs, patience, precision, ...).
    reads: need -> what of it the features hold (see :data:`READS`), saved for replay.
    """
    trainer = Trainer(sc, runtime, stage.label)
    rng = np.random.default_rng(seed)
    validation = conversation_batches(manifest, "validation", features, sc.batch_size)
    result = trainer.fit(model, lambda epoch: conversation_batches(manifest, "train", features, sc.batch_size, rng),
                         lambda: validation, adamw(model, sc.lr, sc.weight_decay), resume=out_dir / "epochs")
    save_model(model, out_dir / "checkpoint")
    save_stage_info(out_dir / "checkpoint", stage, manifest.labels,
                    stage.replay_type(batch_size=sc.batch_size, precision=sc.precision, reads=reads or {}))
    preds = {s: trainer.predict(model, conversation_batches(manifest, s, features, sc.batch_size), f"{stage.label} {s}")
             for s in splits_present(manifest)}
    return {**export(preds, manifest, out_dir, stage.label), **fit_summary(result)}


def replay_conversations(view, inputs: dict[str, np.ndarray], names: tuple[str, ...], replay: Replay) -> list[dict]:
    """Evaluation batches of every conversation of the view: ``inputs`` (need -> (N_conversation_rows, D)) passed to
    the model under ``names``, in the needs' order."""
    features = {name: inputs[need] for name, need in zip(names, inputs)}
    return [b for split in splits_present(view.conversations)
            for b in conversation_batches(view.conversations, split, features, replay.batch_size)]


def upstream_arrays(stage: Stage, levels: dict[str, str], preds: dict[str, Predictions], view: View,
                    reads: dict[str, str] | None = None) -> dict:
    """The needs' outputs (``reads``: need -> embeddings | logits | both, as the stage was trained; default
    embeddings) as arrays aligned with the rows ``stage`` reads: a conversation stage reading a Stage I output gets
    each utterance's row copied into every conversation row that holds it."""
    out = {}
    for need in stage.needs:
        what = (reads or {}).get(need, "embeddings")
        if stage.level == "utterance" or levels[need] == "conversation":
            out[need] = align(preds[need], view.utterances if stage.level == "utterance" else view.conversations, what)
        else:
            out[need] = align(preds[need], view.utterances, what)[view.source]
    return out


def splits_present(manifest: Manifest) -> list[str]:
    return [s for s in SPLITS if (manifest.table["split"] == s).any()]
