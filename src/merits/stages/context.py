"""Stage II (either modality): the conversation model on frozen Stage I embeddings.

Reads the Stage I ``embeddings.safetensors`` by path; writes checkpoint/, embeddings.safetensors (the
contextual embeddings c_i for Stage III), predictions.csv, metrics.json, confusion_test.png into ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

from merits.config import ContextConfig
from merits.data.manifest import Manifest
from merits.models.context import ConversationModel, ConversationModelConfig
from merits.stages.common import load_aligned, train_on_conversations


def model_config(sc: ContextConfig, input_dim: int, num_classes: int) -> ConversationModelConfig:
    """The Stage II model a config describes, on (N, input_dim) utterance embeddings."""
    return ConversationModelConfig(input_dim, num_classes, sc.hidden, sc.heads, sc.dropout, sc.input_dropout, sc.causal)


def run(sc: ContextConfig, manifest: Manifest, stage1_embeddings: Path, seed: int, out_dir: Path,
        device: str = "auto", name: str = "Stage II") -> dict:
    features = {"embeddings": load_aligned(stage1_embeddings, manifest)}  # (N, D) in manifest order
    model = ConversationModel(model_config(sc, features["embeddings"].shape[1], len(manifest.labels)))
    return train_on_conversations(model, sc, manifest, features, seed, out_dir, device, name)
