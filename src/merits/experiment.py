"""The experiment config: which data, which modalities, and one config section per stage.

Each stage's config lives beside its code (``merits.stages.*``) and nests its model's config (``stage2_text.model``,
``stage3.model``, ``stage1_audio.model``), whose dimensions the stage fills from the data. Loaded with
``merits.config.load_config``, which calls :meth:`ExperimentConfig.check`; that walks the experiment's stage graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from merits.audio import AudioConfig
from merits.config import MODALITIES, DataConfig, TextEncoderConfig, load_config
from merits.encoders.speech import SpeechEncoderConfig
from merits.errors import ConfigError
from merits.metrics import check_metric
from merits.stages.context import ContextConfig
from merits.stages.fusion import FusionConfig
from merits.stages.speech_utterance import SpeechHeadTrainConfig
from merits.stages.stacking import StackingConfig
from merits.stages.text_utterance import Stage1TextConfig


def _stem(root) -> str:
    """A data root's name for a run folder: the file's stem (calls.csv -> calls), a folder's name; made safe."""
    if not root:
        return ""
    from pathlib import Path

    p = Path(str(root))
    name = p.stem if p.suffix.lower() in (".csv", ".jsonl", ".json", ".ndjson") else p.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")


@dataclass
class ExperimentConfig:
    name: str = "meld-offline"                 # the run folder runs_dir/name (own data: <profile>-<data name>)
    runs_dir: str = "runs"                     # where run folders go, relative to the working directory
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # every stage is trained once per seed
    device: str = "auto"                       # auto | cpu | cuda: every component (encoders, features, training)
    threads: int | None = None                 # torch CPU threads; None = torch default
    modalities: list[str] = field(default_factory=lambda: ["text"])  # text and/or audio branches to train
    cache_dir: str = ".cache/features"         # frozen speech-encoder features, keyed by corpus/encoder/config
    data: DataConfig = field(default_factory=DataConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    stage1_text: Stage1TextConfig = field(default_factory=Stage1TextConfig)
    stage2_text: ContextConfig = field(default_factory=ContextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    speech_encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    stage1_audio: SpeechHeadTrainConfig = field(default_factory=SpeechHeadTrainConfig)
    stage2_audio: ContextConfig = field(default_factory=ContextConfig)
    stage3: FusionConfig = field(default_factory=FusionConfig)  # runs when modalities hold text and audio
    # not in the paper: out-of-fold Stage I outputs for the later stages' training inputs (merits.stages.stacking)
    stacking: StackingConfig = field(default_factory=StackingConfig)
    # the paper's "combined" ablation: also train Stages II (both modalities) + III jointly, end to end, from the
    # Stage I embeddings (shapes from stage2_text / stage2_audio / stage3, optimiser from stage3); reported beside
    # the hierarchical Stage III
    combined: bool = False
    # a run folder trained on another manifest (other data) is refused, never silently replaced; true replaces it
    overwrite: bool = False
    # the results table's metric: weighted_f1 (the paper's) | macro_f1 | micro_f1 | accuracy, averaged over
    # metric_classes (default: every class), e.g. micro_f1 without an "others" class; reporting only (each stage
    # still selects its epoch on validation weighted F1), so `merits report RUN --metric ...` changes it afterwards
    metric: str = "weighted_f1"
    metric_classes: list[str] = field(default_factory=list)  # the classes the metric averages over; [] = all

    @staticmethod
    def complete(profile: str | None, base: dict, changes: dict, merged: dict) -> dict:
        """The run's default name when the overrides point a profile at other data: ``<profile>-<data name>``
        (``offline data.corpus=custom data.root=calls.csv`` -> ``runs/offline-calls``), so that training on your
        own data never lands in the profile's own run folder. An explicit ``name=`` always wins."""
        if "name" in changes or not isinstance(changes.get("data"), dict):
            return merged
        data = merged.get("data") or {}
        corpus = data.get("corpus", DataConfig.corpus)
        own = (base.get("data") or {}).get("corpus", DataConfig.corpus)
        named = (changes["data"].get("options") or {}).get("name")
        if corpus == own and not named and not (corpus == "custom" and "root" in changes["data"]):
            return merged  # the profile's own corpus (e.g. mosi-offline data.root=<your copy of MOSI>)
        label = named or (data.get("options") or {}).get("name") or _stem(data.get("root")) or corpus
        prefix = merged.get("name", ExperimentConfig.name) if profile is None else profile
        return {**merged, "name": f"{prefix}-{label}"}

    def check(self) -> "ExperimentConfig":
        """Semantic checks that types alone do not catch; errors name the key."""
        from merits.data import ADAPTERS
        from merits.stages.graph import build_graph

        if self.data.corpus not in ADAPTERS:
            raise ConfigError(f"data.corpus: unknown corpus {self.data.corpus!r}; known: {sorted(ADAPTERS)}")
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: {self.threads} (give a positive number of CPU threads, or null for torch's "
                              "default)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: {self.seeds} repeats a seed")
        if not self.modalities or set(self.modalities) - set(MODALITIES):
            raise ConfigError(f"modalities: {self.modalities} must be a non-empty subset of {list(MODALITIES)}")
        if self.combined and set(self.modalities) != set(MODALITIES):
            raise ConfigError(f"combined: the combined ablation fuses text and audio; modalities is {self.modalities}")
        try:
            check_metric(self.metric, self.metric_classes)
        except ValueError as e:
            raise ConfigError(f"metric: {e}") from None
        for stage in build_graph(self):
            stage.check(stage.settings(self))
        return self


def load_experiment(path=None, overrides=()) -> ExperimentConfig:
    """An experiment's config: a shipped profile name or a YAML path (None: the defaults) with ``key=value``
    overrides, checked (:meth:`ExperimentConfig.check`)."""
    return load_config(path, overrides, cls=ExperimentConfig)
