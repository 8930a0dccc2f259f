"""What a stage is: a type with a name, the stages it needs, how it trains, how it loads its checkpoint, and how it
batches a manifest plus its inputs. An experiment's stages form one graph (:mod:`merits.stages.graph`); the
pipeline, ``merits predict``, the report and the config checks walk it and know no stage by name.

Adding a stage is one module defining a :class:`Stage` subclass plus one ``register_stage`` call, and one line in
the graph builder that places it.

Every checkpoint directory holds ``stage.json`` beside the weights: the stage kind, the class names it was trained
on and its replay settings (tokeniser max length, batch sizes, the speech encoder and audio settings), so that the
checkpoint replays its model alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from merits.data.manifest import Manifest
from merits.errors import ConfigError, read_json
from merits.training import Predictions

STAGE_FILE = "stage.json"


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
    replay: dict = field(default_factory=dict)


class Stage:
    """A stage type. An instance is a node of an experiment's graph (e.g. Stage II of the text branch).

    name     its directory under runs/<experiment>/ (stage1_text, stage2_audio, stage3, combined, ...)
    label    its row name in tables and plots (Text I, Audio II, Audio+Text III, ...)
    needs    the nodes whose outputs it reads, in the order its inputs take them
    section  the ExperimentConfig field holding its config
    """

    kind: ClassVar[str]                 # registry name, saved in stage.json
    level: ClassVar[str]                # "utterance": one output row per utterance; "conversation": reads context
    distributed: ClassVar[bool] = False  # trains on every data-parallel process (else rank 0 alone)
    hierarchy: ClassVar[bool] = True    # a row of Table I (False: an ablation, reported beside it)
    ablation_row: ClassVar[str] = ""     # an ablation's row name in the ablation table

    def __init__(self, name: str, label: str, section: str, needs: tuple[str, ...] = (), modalities: tuple = ()):
        self.name, self.label, self.section, self.needs, self.modalities = name, label, section, needs, modalities

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    # -------------------------------------------------------------- training
    def settings(self, cfg):
        """This stage's config (a TrainerConfig with the model's config nested where it has one)."""
        return getattr(cfg, self.section)

    def key_parts(self, cfg, data) -> tuple:
        """What the stage's output depends on besides its needs' keys and the seed (hashed into its cache key)."""
        return (self.settings(cfg),)

    def check(self, cfg) -> None:
        """Semantic checks of this stage's config beyond types (errors name the key)."""

    def train(self, cfg, data, inputs: dict[str, Path], seed: int, out: Path) -> dict:
        """Train on ``data`` (a :class:`merits.stages.graph.TrainingData`) and the needs' output directories;
        write the checkpoint and exports into ``out``; return the metrics."""
        raise NotImplementedError

    # -------------------------------------------------------------- replay
    def load(self, checkpoint: Path) -> nn.Module:
        raise NotImplementedError

    def batches(self, model: nn.Module, view: View, inputs: dict[str, np.ndarray], replay: dict) -> list[dict]:
        """Evaluation batches of every utterance of the view. ``inputs``: need -> its output rows aligned with
        the rows this stage reads (``view.utterances`` or ``view.conversations``)."""
        raise NotImplementedError


STAGES: dict[str, type[Stage]] = {}


def register_stage(cls: type[Stage]) -> type[Stage]:
    STAGES[cls.kind] = cls
    return cls


def save_stage_info(checkpoint: Path, stage: Stage, labels, replay: dict) -> None:
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / STAGE_FILE).write_text(json.dumps(
        {"kind": stage.kind, "name": stage.name, "needs": list(stage.needs), "labels": list(labels),
         "replay": replay}, indent=2, default=str))


def load_stage(stage: Stage, checkpoint: Path) -> Loaded:
    """The model of a finished stage and its replay settings; a clear error for checkpoints of older versions."""
    info = checkpoint / STAGE_FILE
    if not info.is_file():
        raise ConfigError(f"{checkpoint} has no {STAGE_FILE}: it was written by an older merits, whose checkpoints do "
                          "not carry their replay settings; retrain the run with merits train")
    meta = read_json(info, "retrain the run with merits train")
    if meta.get("kind") != stage.kind:
        raise ConfigError(f"{checkpoint} holds a {meta.get('kind')!r} stage, not {stage.kind!r}")
    return Loaded(stage.load(checkpoint), tuple(meta["labels"]), meta.get("replay", {}))


def upstream_arrays(stage: Stage, levels: dict[str, str], preds: dict[str, Predictions], view: View,
                    reads: dict[str, str] | None = None) -> dict:
    """The needs' outputs (``reads``: need -> embeddings | logits | both, as the stage was trained; default
    embeddings) as arrays aligned with the rows ``stage`` reads: a conversation stage reading a Stage I output gets
    each utterance's row copied into every conversation row that holds it."""
    from merits.stages.common import align

    out = {}
    for need in stage.needs:
        what = (reads or {}).get(need, "embeddings")
        if stage.level == "utterance" or levels[need] == "conversation":
            out[need] = align(preds[need], view.utterances if stage.level == "utterance" else view.conversations, what)
        else:
            out[need] = align(preds[need], view.utterances, what)[view.source]
    return out
