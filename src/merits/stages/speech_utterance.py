"""Stage I speech: the CARE downstream head on cached frozen speech-encoder features.

Reads features from a :class:`merits.features.FeatureStore` (never the audio); writes checkpoint/ (+ stage.json
with the speech encoder settings that made the features), embeddings.safetensors (the 256-d utterance
embeddings + logits, keyed by id), predictions.csv, metrics.json, confusion_test.png into ``out``. Model selection
uses validation weighted F1 only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from merits.errors import ConfigError, DataError
from merits.models.checkpoint import load_model, save_model
from merits.models.utterance import SpeechHead, SpeechHeadConfig
from merits.encoders.speech import SpeechEncoderConfig
from merits.stages.base import Replay, Stage, register_stage, save_stage_info
from merits.stages.common import export, fit_summary, splits_present
from merits.training import IGNORE, Trainer, TrainerConfig, adamw

EVAL_BATCH = 256


@dataclass
class SpeechHeadTrainConfig(TrainerConfig):
    """Stage I speech: the CARE downstream head on frozen features (layer weights -> FC 768 -> FC 256 -> classes)."""

    model: SpeechHeadConfig = field(default_factory=SpeechHeadConfig)  # dimensions filled from the feature store
    epochs: int = 60
    batch_size: int = 32                       # utterances per batch
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10


def feature_batches(features: torch.Tensor, labels: np.ndarray, ids: np.ndarray, rows: np.ndarray, batch_size: int,
                    rng: np.random.Generator | None = None) -> list[dict]:
    """Batches of (B, L, D) features for the given manifest rows (shuffled when ``rng`` is given)."""
    if rng is not None:
        rows = rng.permutation(rows)
    return [{"inputs": {"features": features[c]}, "labels": torch.as_tensor(np.where(labels[c] >= 0, labels[c], IGNORE)),
             "utterance_ids": list(ids[c])} for c in (rows[i:i + batch_size] for i in range(0, len(rows), batch_size))]


def train_head(sc: SpeechHeadTrainConfig, manifest, features: torch.Tensor, seed: int, runtime="auto",
               desc: str = "Stage I audio", resume: Path | None = None):
    """Train the head on (N, L, D) features in manifest order; returns (model, FitResult, Trainer, rows per split).
    ``resume``: where the loop keeps its state after every epoch (a killed run goes on at its next epoch)."""
    table = manifest.table
    labels, ids = manifest.label_ids(), table["utterance_id"].to_numpy()
    split = table["split"].to_numpy()
    rows = {s: np.flatnonzero(split == s) for s in splits_present(manifest)}
    train = rows["train"][labels[rows["train"]] >= 0]  # unlabelled turns are context for Stage II, not examples
    model = SpeechHead(replace(sc.model, num_layers=features.shape[1], input_dim=features.shape[2],
                               num_classes=len(manifest.labels)))
    _check_magnitudes(features, ids)
    model.set_normalisation(features[train])
    rng = np.random.default_rng(seed)
    validation = feature_batches(features, labels, ids, rows["validation"], EVAL_BATCH)
    trainer = Trainer(sc, runtime, desc)
    result = trainer.fit(model, lambda epoch: feature_batches(features, labels, ids, train, sc.batch_size, rng),
                         lambda: validation, adamw(model, sc.lr, sc.weight_decay), resume=resume)
    return model, result, trainer, rows


HUGE = 1e30  # no acoustic feature is this large: a value beyond it is damage (and would zero its feature for all)


def _check_magnitudes(features: torch.Tensor, ids) -> None:
    """A finite but absurd value (3e38 in one row) overflows the training standard deviation to inf, which silently
    turns that feature into zeros for every utterance: a named error instead, naming the rows."""
    huge = (features.abs() > HUGE).flatten(1).any(1)  # (N,)
    if huge.any():
        from merits.data.manifest import _listing

        rows = ids[huge.numpy()]
        raise DataError(f"speech features of {len(rows)} utterances hold values beyond {HUGE:g} (damaged: e.g. "
                        f"{float(features[huge].abs().max()):.3g}): {_listing(rows)}; fix or drop them")


@dataclass
class SpeechSettings:
    """What Stage I speech reads of the experiment: the speech encoder that made its features (saved for replay)
    and its own training section."""

    encoder: SpeechEncoderConfig
    train: SpeechHeadTrainConfig


@dataclass
class SpeechReplay(Replay):
    speech_encoder: dict = field(default_factory=dict)  # the encoder settings that made the features it reads


@register_stage
class SpeechUtteranceStage(Stage):
    kind = "speech_utterance"
    level = "utterance"
    replay_type = SpeechReplay

    def settings(self, cfg) -> SpeechSettings:
        return SpeechSettings(cfg.speech_encoder, cfg.stage1_audio)

    def key_parts(self, s: SpeechSettings, data) -> tuple:
        # the features are named by their cache directory (corpus, encoder, settings); the manifest by content
        return ("audio", data.manifest(self).fingerprint(), data.features.directory.name, s.train)

    def train(self, s: SpeechSettings, data, inputs, seed: int, out: Path, runtime) -> dict:
        sc, manifest, store = s.train, data.manifest(self), data.features
        table = manifest.table
        features = torch.from_numpy(store.get(table["utterance_id"]))  # (N, L, D) in manifest order
        model, result, trainer, rows = train_head(sc, manifest, features, seed, runtime, self.label, out / "epochs")
        save_model(model, out / "checkpoint")
        save_stage_info(out / "checkpoint", self, manifest.labels,
                        SpeechReplay(batch_size=EVAL_BATCH, precision=sc.precision, speech_encoder=asdict(s.encoder)))
        labels, ids = manifest.label_ids(), table["utterance_id"].to_numpy()
        preds = {s: trainer.predict(model, feature_batches(features, labels, ids, r, EVAL_BATCH), f"{self.label} {s}")
                 for s, r in rows.items()}
        metrics = export(preds, manifest, out, self.label)
        metrics.update(fit_summary(result), layer_weights=model.layer_weights.detach().cpu().tolist())
        return metrics

    def load(self, checkpoint: Path):
        return load_model(SpeechHead, SpeechHeadConfig, checkpoint)

    def batches(self, model, view, inputs, replay: SpeechReplay):
        ids = view.utterances.table["utterance_id"].to_numpy()
        features = torch.from_numpy(view.features.get(ids))  # (N, L, D) in view order
        if tuple(features.shape[1:]) != (model.config.num_layers, model.config.input_dim):
            raise ConfigError(f"the Stage I speech checkpoint expects ({model.config.num_layers}, "
                              f"{model.config.input_dim}) features, the speech encoder gave {tuple(features.shape[1:])}")
        split = view.utterances.table["split"].to_numpy()
        labels = view.utterances.label_ids()
        # per split, as the exports batched them
        return [b for s in splits_present(view.utterances)
                for b in feature_batches(features, labels, ids, np.flatnonzero(split == s), replay.batch_size)]
