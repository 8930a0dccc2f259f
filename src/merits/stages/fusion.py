"""Stage III: co-attention fusion trained on the frozen Stage II contextual embeddings of both modalities; and the
paper's "combined" ablation, which trains Stages II and III together from the Stage I embeddings.

``run`` reads the Stage II text and audio ``embeddings.safetensors`` by path (``run_combined`` the Stage I ones);
both write checkpoint/, embeddings.safetensors (the fused (N, 2d) vectors), predictions.csv, metrics.json,
confusion_test.png into ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

from merits.config import ContextConfig, FusionConfig
from merits.data.manifest import Manifest
from merits.models.fusion import CoAttentionFusion, CombinedModel, CombinedModelConfig, FusionModelConfig
from merits.stages.common import load_aligned, train_on_conversations
from merits.stages.context import model_config


def run(sc: FusionConfig, manifest: Manifest, text_embeddings: Path, audio_embeddings: Path, seed: int,
        out_dir: Path, device: str = "auto", name: str = "Stage III") -> dict:
    features = {"text": load_aligned(text_embeddings, manifest),    # (N, 2H_text) in manifest order
                "audio": load_aligned(audio_embeddings, manifest)}  # (N, 2H_audio)
    model = CoAttentionFusion(_fusion_config(sc, features["text"].shape[1], features["audio"].shape[1], manifest))
    return train_on_conversations(model, sc, manifest, features, seed, out_dir, device, name)


def run_combined(sc: FusionConfig, text_context: ContextConfig, audio_context: ContextConfig, manifest: Manifest,
                 text_embeddings: Path, audio_embeddings: Path, seed: int, out_dir: Path, device: str = "auto",
                 name: str = "Combined II+III") -> dict:
    """The ablation: Stage II of both modalities and Stage III trained end to end on the Stage I embeddings, with
    the optimiser settings of ``sc`` (Stage III) and the shapes of the Stage II configs."""
    features = {"text": load_aligned(text_embeddings, manifest),    # (N, D_text) Stage I embeddings
                "audio": load_aligned(audio_embeddings, manifest)}  # (N, D_audio)
    labels = len(manifest.labels)
    context = {m: model_config(c, features[m].shape[1], labels) for m, c in (("text", text_context), ("audio", audio_context))}
    fusion = _fusion_config(sc, 2 * text_context.hidden, 2 * audio_context.hidden, manifest)
    model = CombinedModel(CombinedModelConfig(context["text"], context["audio"], fusion))
    return train_on_conversations(model, sc, manifest, features, seed, out_dir, device, name)


def _fusion_config(sc: FusionConfig, text_dim: int, audio_dim: int, manifest: Manifest) -> FusionModelConfig:
    return FusionModelConfig(text_dim, audio_dim, len(manifest.labels), sc.d_model, sc.heads, sc.layers,
                             sc.feedforward, sc.dropout, sc.input_dropout, sc.causal)
