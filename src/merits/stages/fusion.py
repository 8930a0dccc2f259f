"""Stage III: co-attention fusion trained on the frozen Stage II contextual embeddings of both modalities.

Reads the Stage II text and audio ``embeddings.safetensors`` by path; writes checkpoint/, embeddings.safetensors
(the fused (N, 2d) vectors), predictions.csv, metrics.json, confusion_test.png into ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

from merits.config import FusionConfig
from merits.data.manifest import Manifest
from merits.models.fusion import CoAttentionFusion, FusionModelConfig
from merits.stages.common import load_aligned, train_on_conversations


def run(sc: FusionConfig, manifest: Manifest, text_embeddings: Path, audio_embeddings: Path, seed: int,
        out_dir: Path, device: str = "auto", name: str = "Stage III") -> dict:
    features = {"text": load_aligned(text_embeddings, manifest),    # (N, 2H_text) in manifest order
                "audio": load_aligned(audio_embeddings, manifest)}  # (N, 2H_audio)
    model = CoAttentionFusion(FusionModelConfig(features["text"].shape[1], features["audio"].shape[1],
                                                len(manifest.labels), sc.d_model, sc.heads, sc.layers,
                                                sc.feedforward, sc.dropout))
    return train_on_conversations(model, sc, manifest, features, seed, out_dir, device, name)
