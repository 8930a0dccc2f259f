"""Stage III: co-attention fusion trained on the frozen Stage II contextual embeddings of both modalities; and the
paper's "combined" ablation, which trains Stages II and III together from the Stage I embeddings.

Stage III reads the Stage II text and audio ``embeddings.safetensors`` by path (the combined ablation the Stage I
ones); both write checkpoint/ (+ stage.json), embeddings.safetensors (the fused (N, 2d) vectors), predictions.csv,
metrics.json, confusion_test.png into ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from merits.models.checkpoint import load_model
from merits.models.fusion import CoAttentionFusion, CombinedModel, CombinedModelConfig, FusionModelConfig
from merits.runs import EMBEDDINGS
from merits.stages.base import Stage, register_stage
from merits.stages.common import check_reads, load_aligned, replay_conversations, train_on_conversations
from merits.stages.context import ContextConfig
from merits.training import TrainerConfig


@dataclass
class FusionConfig(TrainerConfig):
    """Stage III: co-attention fusion of the Stage II text and audio sequences (needs both modalities)."""

    model: FusionModelConfig = field(default_factory=FusionModelConfig)  # dimensions filled from the data
    epochs: int = 40
    batch_size: int = 16                       # conversations per batch
    lr: float = 5e-4
    weight_decay: float = 1e-4
    patience: int = 8
    reads: str = "embeddings"                  # of Stage II: embeddings | logits | both (concatenated)


def _features(stage: Stage, inputs: dict[str, Path], manifest, reads: dict[str, str]) -> dict:
    """{"text": (N, D_text), "audio": (N, D_audio)} in manifest order, from the needs (text first, then audio);
    ``reads``: need -> embeddings | logits | both."""
    text, audio = stage.needs
    return {"text": load_aligned(inputs[text] / EMBEDDINGS, manifest, reads[text]),
            "audio": load_aligned(inputs[audio] / EMBEDDINGS, manifest, reads[audio])}


@dataclass
class CombinedSettings:
    """What the combined ablation reads of the experiment: both Stage II sections (model shapes, what they read of
    Stage I) and Stage III's (its model and the optimiser of the joint training)."""

    text: ContextConfig
    audio: ContextConfig
    fusion: FusionConfig


@register_stage
class FusionStage(Stage):
    kind = "fusion"
    level = "conversation"

    def reads(self, sc) -> dict[str, str]:
        return {need: sc.reads for need in self.needs}

    def check(self, sc: FusionConfig) -> None:
        check_reads(sc.reads, f"{self.section}.reads")

    def train(self, sc: FusionConfig, data, inputs: dict[str, Path], seed: int, out: Path, runtime) -> dict:
        manifest = data.manifest(self)
        features = _features(self, inputs, manifest, self.reads(sc))  # the Stage II outputs (N, 2H_text), (N, 2H_audio)
        model = CoAttentionFusion(replace(sc.model, text_dim=features["text"].shape[1],
                                          audio_dim=features["audio"].shape[1], num_classes=len(manifest.labels)))
        return train_on_conversations(self, model, sc, manifest, features, seed, out, runtime, self.reads(sc))

    def load(self, checkpoint: Path):
        return load_model(CoAttentionFusion, FusionModelConfig, checkpoint)

    def batches(self, model, view, inputs, replay):
        return replay_conversations(view, inputs, ("text", "audio"), replay)


@register_stage
class CombinedStage(FusionStage):
    """The ablation: Stage II of both modalities and Stage III trained end to end on the Stage I embeddings, with
    the optimiser settings of Stage III's config and the model shapes of the three configs."""

    kind = "combined"
    hierarchy = False
    ablation_row = "Combined (II + III jointly)"

    def settings(self, cfg) -> CombinedSettings:
        return CombinedSettings(cfg.stage2_text, cfg.stage2_audio, cfg.stage3)

    def key_parts(self, s: CombinedSettings, data) -> tuple:
        return (s.text, s.audio, s.fusion)

    def reads(self, s: CombinedSettings) -> dict[str, str]:  # what each modality's Stage II reads in the hierarchy
        text, audio = self.needs
        return {text: s.text.reads, audio: s.audio.reads}

    def check(self, s: CombinedSettings) -> None:
        pass  # reads of stage2_text / stage2_audio, checked by those stages

    def train(self, s: CombinedSettings, data, inputs: dict[str, Path], seed: int, out: Path, runtime) -> dict:
        manifest = data.manifest(self)
        features = _features(self, inputs, manifest, self.reads(s))  # the Stage I outputs (N, D_text), (N, D_audio)
        labels = len(manifest.labels)
        text = replace(s.text.model, input_dim=features["text"].shape[1], num_classes=labels)
        audio = replace(s.audio.model, input_dim=features["audio"].shape[1], num_classes=labels)
        fusion = replace(s.fusion.model, text_dim=2 * text.hidden, audio_dim=2 * audio.hidden, num_classes=labels)
        model = CombinedModel(CombinedModelConfig(text, audio, fusion))
        return train_on_conversations(self, model, s.fusion, manifest, features, seed, out, runtime, self.reads(s))

    def load(self, checkpoint: Path):
        return load_model(CombinedModel, CombinedModelConfig, checkpoint)
