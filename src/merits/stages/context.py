"""Stage II (either modality): the conversation model on frozen Stage I embeddings.

Reads the Stage I ``embeddings.safetensors`` by path; writes checkpoint/, embeddings.safetensors (the
contextual embeddings c_i for Stage III), predictions.csv, metrics.json, confusion_test.png into ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from merits.config import ContextConfig
from merits.data.manifest import Manifest
from merits.models.checkpoint import save_model
from merits.models.context import ConversationModel, ConversationModelConfig
from merits.stages.common import conversation_batches, export, load_aligned, splits_present
from merits.training import fit, predict, resolve_device


def run(sc: ContextConfig, manifest: Manifest, stage1_embeddings: Path, seed: int, out_dir: Path,
        device: str = "auto", name: str = "Stage II") -> dict:
    features = {"embeddings": load_aligned(stage1_embeddings, manifest)}  # (N, D) in manifest order
    dev = resolve_device(device)
    model = ConversationModel(ConversationModelConfig(
        features["embeddings"].shape[1], len(manifest.labels), sc.hidden, sc.heads, sc.dropout, sc.input_dropout))
    optimizer = torch.optim.AdamW(model.parameters(), lr=sc.lr, weight_decay=sc.weight_decay)
    rng = np.random.default_rng(seed)
    validation = conversation_batches(manifest, "validation", features, sc.batch_size)
    result = fit(model, lambda epoch: conversation_batches(manifest, "train", features, sc.batch_size, rng),
                 lambda: validation, optimizer, epochs=sc.epochs, patience=sc.patience, device=dev, desc=name)
    save_model(model, out_dir / "checkpoint")
    preds = {s: predict(model, conversation_batches(manifest, s, features, sc.batch_size), dev, f"{name} {s}")
             for s in splits_present(manifest)}
    metrics = export(preds, manifest, out_dir, name)
    metrics.update(best_epoch=result.best_epoch, seconds_per_epoch=result.seconds_per_epoch, history=result.history)
    return metrics
