"""Stage I speech: the CARE downstream head on cached frozen speech-encoder features.

Reads features from a :class:`merits.features.FeatureStore` (never the audio); writes checkpoint/,
embeddings.safetensors (the 256-d utterance embeddings + logits, keyed by id), predictions.csv, metrics.json,
confusion_test.png into ``out_dir``. Model selection uses validation weighted F1 only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from merits.config import SpeechHeadTrainConfig
from merits.data.manifest import Manifest
from merits.features import FeatureStore
from merits.models.checkpoint import save_model
from merits.models.utterance import SpeechHead, SpeechHeadConfig
from merits.stages.common import export, fit_summary, splits_present
from merits.training import IGNORE, fit, predict, resolve_device


def feature_batches(features: torch.Tensor, labels: np.ndarray, ids: np.ndarray, rows: np.ndarray, batch_size: int,
                    rng: np.random.Generator | None = None) -> list[dict]:
    """Batches of (B, L, D) features for the given manifest rows (shuffled when ``rng`` is given)."""
    if rng is not None:
        rows = rng.permutation(rows)
    return [{"inputs": {"features": features[c]}, "labels": torch.as_tensor(np.where(labels[c] >= 0, labels[c], IGNORE)),
             "utterance_ids": list(ids[c])} for c in (rows[i:i + batch_size] for i in range(0, len(rows), batch_size))]


def run(sc: SpeechHeadTrainConfig, manifest: Manifest, store: FeatureStore, seed: int, out_dir: Path,
        device: str = "auto", name: str = "Stage I audio") -> dict:
    table = manifest.table
    features = torch.from_numpy(store.get(table["utterance_id"]))  # (N, L, D) in manifest order
    labels, ids = manifest.label_ids(), table["utterance_id"].to_numpy()
    split = table["split"].to_numpy()
    rows = {s: np.flatnonzero(split == s) for s in splits_present(manifest)}
    model = SpeechHead(SpeechHeadConfig(store.num_layers, store.dim, len(manifest.labels), tuple(sc.hidden), sc.dropout))
    model.set_normalisation(features[rows["train"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=sc.lr, weight_decay=sc.weight_decay)
    rng = np.random.default_rng(seed)
    validation = feature_batches(features, labels, ids, rows["validation"], 256)
    dev = resolve_device(device)
    result = fit(model, lambda epoch: feature_batches(features, labels, ids, rows["train"], sc.batch_size, rng),
                 lambda: validation, optimizer, epochs=sc.epochs, patience=sc.patience, device=dev, desc=name)
    save_model(model, out_dir / "checkpoint")
    preds = {s: predict(model, feature_batches(features, labels, ids, r, 256), dev, f"{name} {s}") for s, r in rows.items()}
    metrics = export(preds, manifest, out_dir, name)
    metrics.update(fit_summary(result), layer_weights=model.layer_weights.detach().cpu().tolist())
    return metrics
