"""One experiment's stages as a graph, built from its config.

    audio branch:  stage1_audio (Audio I) -> stage2_audio (Audio II) \
                                                                       stage3 (Audio+Text III)
    text branch:   stage1_text (Text I)   -> stage2_text (Text II)   /
    ablation:      stage1_text + stage1_audio -> combined (Combined II+III), with combined: true
    stacking:      with stacking.folds: K, each Stage I is trained out of fold (merits.stages.stacking)

The pipeline trains it in order, ``merits predict`` and ``merits serve`` replay a chain of it, the report takes its
row names from it, and the config checks walk it. A stage type defined elsewhere (a plug-in, a test) places itself
with ``register_placement``: a function of the config and the nodes so far that appends its nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import merits.stages.context  # noqa: F401  (each stage module registers its types in STAGES)
import merits.stages.fusion  # noqa: F401
import merits.stages.speech_utterance  # noqa: F401
import merits.stages.text_utterance  # noqa: F401
from merits.stages.stacking import OutOfFoldStage
from merits.errors import ConfigError
from merits.stages.base import STAGES, Stage

PLACEMENTS: list[Callable[[object, list[Stage]], None]] = []  # fn(cfg, nodes): appends stages placed after these


def register_placement(place: Callable[[object, list[Stage]], None]):
    """Place more stages in every experiment's graph: ``place(cfg, nodes)`` appends them (each after its needs)."""
    PLACEMENTS.append(place)
    return place


BRANCHES = {  # modality -> (Stage I kind, row names of Stage I and II); audio first, the paper's row order
    "audio": ("speech_utterance", "Audio I", "Audio II"),
    "text": ("text_utterance", "Text I", "Text II"),
}


@dataclass
class Graph:
    nodes: dict[str, Stage]  # name -> stage, in training order (every stage after the stages it needs)

    def __iter__(self):
        return iter(self.nodes.values())

    def __getitem__(self, name: str) -> Stage:
        if name not in self.nodes:
            raise ConfigError(f"unknown stage {name!r}; this experiment has {list(self.nodes)}")
        return self.nodes[name]

    @property
    def final(self) -> Stage:
        """The last stage of the hierarchy (Stage III with both modalities, else Stage II)."""
        return [s for s in self if s.hierarchy][-1]

    def chain(self, name: str) -> list[Stage]:
        """``name`` and every stage it needs, in training order."""
        wanted, todo = set(), [name]
        while todo:
            stage = self[todo.pop()]
            wanted.add(stage.name)
            todo.extend(stage.needs)
        return [s for s in self if s.name in wanted]

    @property
    def levels(self) -> dict[str, str]:
        return {s.name: s.level for s in self}

    def rows(self, hierarchy: bool = True) -> list[tuple[str, str]]:
        """(row name, stage name) of the Table I rows (or, hierarchy=False, of the ablation table's ablations)."""
        return [(s.label if hierarchy else s.ablation_row, s.name) for s in self if s.hierarchy == hierarchy]

    @property
    def stage_labels(self) -> dict[str, str]:
        """stage name -> its short name in plots and per-class tables."""
        return {s.name: s.label for s in self}


def build_graph(cfg) -> Graph:
    """The stages an ExperimentConfig trains: a branch per modality, Stage III with both, the combined ablation."""
    nodes: list[Stage] = []
    modalities = [m for m in BRANCHES if m in cfg.modalities]
    for m in modalities:
        first, label1, label2 = BRANCHES[m]
        stage1 = STAGES[first](f"stage1_{m}", label1, f"stage1_{m}", (), (m,))
        nodes.append(OutOfFoldStage(stage1) if cfg.stacking.folds else stage1)  # stacking: out-of-fold outputs
        nodes.append(STAGES["context"](f"stage2_{m}", label2, f"stage2_{m}", (f"stage1_{m}",), (m,)))
    if len(modalities) == 2:
        nodes.append(STAGES["fusion"]("stage3", "Audio+Text III", "stage3", ("stage2_text", "stage2_audio"),
                                      ("text", "audio")))
        if cfg.combined:
            nodes.append(STAGES["combined"]("combined", "Combined II+III", "stage3", ("stage1_text", "stage1_audio"),
                                            ("text", "audio")))
    for place in PLACEMENTS:
        place(cfg, nodes)
    return Graph({s.name: s for s in nodes})
