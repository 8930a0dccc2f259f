"""What a stage is: a type with a name, the stages it needs, how it trains, how it loads its checkpoint, and how it
batches a manifest plus its inputs. An experiment's stages form one graph (:mod:`merits.stages.graph`); the
pipeline, ``merits predict``, the report and the config checks walk it and know no stage by name.

A stage sees the experiment config in one method, :meth:`Stage.settings`, which picks its own section(s); everything
else (checks, cache key, training) receives that typed section, the :class:`TrainingData` and the process'
:class:`merits.runtime.Runtime`. Adding a stage type is one module defining a :class:`Stage` subclass (registered with
``register_stage``) plus its placement in the graph builder.

Every checkpoint directory holds ``stage.json`` beside the weights: the stage kind, the class names it was trained
on and its :class:`Replay` settings (batch size, precision, and per type: the tokeniser's length and conversation
window, the speech encoder, what it reads of its needs), saved from a dataclass and read back into the same one, so
that a checkpoint replays exactly as it was trained.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from merits.data.manifest import Manifest
from merits.errors import ConfigError, read_json
from merits.runtime import Runtime

STAGE_FILE = "stage.json"


@dataclass
class TrainingData:
    """What an experiment's stages read besides each other's outputs."""

    utterances: Manifest               # every labelled utterance
    features: object | None            # the speech feature store (merits.features.FeatureStore), when audio runs
    with_audio: Manifest | None        # the utterances that have features (all, unless bad audio was skipped)

    def manifest(self, stage: "Stage") -> Manifest:
        """The utterances ``stage`` trains and exports on: those with features when it reads audio."""
        return self.with_audio if "audio" in stage.modalities and self.with_audio is not None else self.utterances


@dataclass
class Replay:
    """How a checkpoint is replayed: the settings of its training that prediction must repeat. Each stage type
    extends it; saved in stage.json, read back into the same class (keys of other versions ignored, missing ones at
    their defaults: fp32 for checkpoints written before precision was kept)."""

    batch_size: int = 128                 # rows per forward pass
    precision: str = "fp32"               # autocast of the forward pass, as in training's exports
    reads: dict = field(default_factory=dict)  # need -> embeddings | logits | both: what of each need it reads

    @classmethod
    def from_dict(cls, values: dict) -> "Replay":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in known})


@dataclass
class View:
    """What the stages of one prediction (or one training run's exports) read.

    utterances     one row per utterance (Stage I reads these)
    conversations  what conversation stages read: the utterances themselves, or (online prediction) one
                   pseudo-conversation per turn prefix
    source         (N_conversation_rows,) the ``utterances`` row each ``conversations`` row copies
    features       the speech feature store, where an audio stage runs
    online         each turn predicted from the turns up to it only: an utterance stage reading a conversation
                   window leaves out the turns after it (they are not known yet in live use)
    """

    utterances: Manifest
    conversations: Manifest | None = None
    source: np.ndarray | None = None
    features: object | None = None
    online: bool = False

    def __post_init__(self) -> None:
        if self.conversations is None:
            self.conversations, self.source = self.utterances, np.arange(len(self.utterances.table))


@dataclass
class Loaded:
    """A stage's model rebuilt from its checkpoint, with the settings that replay it."""

    model: nn.Module
    labels: tuple[str, ...]
    replay: Replay = field(default_factory=Replay)


class Stage:
    """A stage type. An instance is a node of an experiment's graph (e.g. Stage II of the text branch).

    name     its directory under runs/<experiment>/ (stage1_text, stage2_audio, stage3, combined, ...)
    label    its row name in tables and plots (Text I, Audio II, Audio+Text III, ...)
    needs    the nodes whose outputs it reads, in the order its inputs take them
    section  the ExperimentConfig field holding its config
    """

    kind: ClassVar[str]                 # registry name, saved in stage.json
    level: ClassVar[str]                # "utterance": one output row per utterance; "conversation": reads context
    replay_type: ClassVar[type[Replay]] = Replay  # its replay settings, saved in and read from stage.json
    distributed: ClassVar[bool] = False  # trains on every data-parallel process (else rank 0 alone)
    hierarchy: ClassVar[bool] = True    # a row of Table I (False: an ablation, reported beside it)
    ablation_row: ClassVar[str] = ""     # an ablation's row name in the ablation table

    def __init__(self, name: str, label: str, section: str, needs: tuple[str, ...] = (), modalities: tuple = ()):
        self.name, self.label, self.section, self.needs, self.modalities = name, label, section, needs, modalities

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    # -------------------------------------------------------------- training
    def settings(self, cfg):
        """This stage's config, from the experiment's: its section (a TrainerConfig with the model's config nested
        where it has one), or a small dataclass of the sections it reads. The one method that sees ``cfg``."""
        return getattr(cfg, self.section)

    def key_parts(self, settings, data: TrainingData) -> tuple:
        """What the stage's output depends on besides its needs' keys and the seed (hashed into its cache key)."""
        return (settings,)

    def check(self, settings) -> None:
        """Semantic checks of this stage's config beyond types (errors name the key)."""

    def train(self, settings, data: TrainingData, inputs: dict[str, Path], seed: int, out: Path,
              runtime: Runtime) -> dict:
        """Train on ``data`` and the needs' output directories (``inputs``: need -> its stage directory) on the
        runtime's device; write the checkpoint (with :func:`save_stage_info`) and exports into ``out``; return the
        metrics."""
        raise NotImplementedError

    # -------------------------------------------------------------- replay
    def load(self, checkpoint: Path) -> nn.Module:
        raise NotImplementedError

    def read_replay(self, values: dict) -> Replay:
        return self.replay_type.from_dict(values)

    def batches(self, model: nn.Module, view: View, inputs: dict[str, np.ndarray], replay: Replay) -> list[dict]:
        """Evaluation batches of every utterance of the view. ``inputs``: need -> its output rows aligned with
        the rows this stage reads (``view.utterances`` or ``view.conversations``)."""
        raise NotImplementedError


STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    STAGES[cls.kind] = cls
    return cls


def save_stage_info(checkpoint: Path, stage: Stage, labels, replay: Replay, **extra) -> None:
    """stage.json: the kind, name, needs, class names and replay settings (``extra``: more of the stage's own, e.g.
    an ensemble's members)."""
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / STAGE_FILE).write_text(json.dumps(
        {"kind": stage.kind, "name": stage.name, "needs": list(stage.needs), "labels": list(labels),
         "replay": {**dataclasses.asdict(replay), **extra}}, indent=2, default=str))


def load_stage(stage: Stage, checkpoint: Path) -> Loaded:
    """The model of a finished stage and its replay settings; a clear error for checkpoints of older versions."""
    info = checkpoint / STAGE_FILE
    if not info.is_file():
        raise ConfigError(f"{checkpoint} has no {STAGE_FILE}: it was written by an older merits, whose checkpoints do "
                          "not carry their replay settings; retrain the run with merits train")
    meta = read_json(info, "retrain the run with merits train")
    if meta.get("kind") != stage.kind:
        raise ConfigError(f"{checkpoint} holds a {meta.get('kind')!r} stage, not {stage.kind!r}")
    return Loaded(stage.load(checkpoint), tuple(meta["labels"]), stage.read_replay(meta.get("replay", {})))
