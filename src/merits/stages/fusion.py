"""Stage III: co-attention fusion trained on the frozen Stage II contextual embeddings of both modalities.

Reads the Stage II text and audio ``embeddings.safetensors`` by path; writes checkpoint/, embeddings.safetensors
(the fused (N, 2d) vectors), predictions.csv, metrics.json, confusion_test.png into ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from merits.config import FusionConfig
from merits.data.manifest import Manifest
from merits.models.checkpoint import save_model
from merits.models.fusion import CoAttentionFusion, FusionModelConfig
from merits.stages.common import conversation_batches, export, load_aligned, splits_present
from merits.training import fit, predict, resolve_device


def run(sc: FusionConfig, manifest: Manifest, text_embeddings: Path, audio_embeddings: Path, seed: int,
        out_dir: Path, device: str = "auto", name: str = "Stage III") -> dict:
    features = {"text": load_aligned(text_embeddings, manifest),    # (N, 2H_text) in manifest order
                "audio": load_aligned(audio_embeddings, manifest)}  # (N, 2H_audio)
    dev = resolve_device(device)
    model = CoAttentionFusion(FusionModelConfig(features["text"].shape[1], features["audio"].shape[1],
                                                len(manifest.labels), sc.d_model, sc.heads, sc.layers,
                                                sc.feedforward, sc.dropout))
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
