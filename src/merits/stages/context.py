"""Stage II (either modality): the conversation model on frozen Stage I embeddings.

Reads the Stage I ``embeddings.safetensors`` by path; writes checkpoint/ (+ stage.json), embeddings.safetensors
(the contextual embeddings c_i for Stage III), predictions.csv, metrics.json, confusion_test.png into ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from merits.models.checkpoint import load_model
from merits.models.context import ConversationModel, ConversationModelConfig
from merits.runs import EMBEDDINGS
from merits.stages.base import Stage, register_stage
from merits.stages.common import check_reads, load_aligned, replay_conversations, train_on_conversations
from merits.training import TrainerConfig


@dataclass
class ContextConfig(TrainerConfig):
    """Stage II: Bi-GRU + self-attention over a conversation of frozen Stage I embeddings."""

    model: ConversationModelConfig = field(default_factory=ConversationModelConfig)  # dimensions filled from the data
    epochs: int = 30
    batch_size: int = 16                       # conversations per batch
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6
    reads: str = "embeddings"                  # of Stage I: embeddings | logits | both (concatenated)


@register_stage
class ContextStage(Stage):
    kind = "context"
    level = "conversation"

    def build(self, sc: ContextConfig, input_dim: int, num_classes: int) -> ConversationModel:
        return ConversationModel(replace(sc.model, input_dim=input_dim, num_classes=num_classes))

    def train(self, sc: ContextConfig, data, inputs: dict[str, Path], seed: int, out: Path, runtime) -> dict:
        manifest = data.manifest(self)
        (need,) = self.needs
        features = {"embeddings": load_aligned(inputs[need] / EMBEDDINGS, manifest, sc.reads)}  # (N, D) manifest order
        model = self.build(sc, features["embeddings"].shape[1], len(manifest.labels))
        return train_on_conversations(self, model, sc, manifest, features, seed, out, runtime, {need: sc.reads})

    def check(self, sc: ContextConfig) -> None:
        check_reads(sc.reads, f"{self.section}.reads")

    def load(self, checkpoint: Path):
        return load_model(ConversationModel, ConversationModelConfig, checkpoint)

    def batches(self, model, view, inputs, replay):
        return replay_conversations(view, inputs, ("embeddings",), replay)
