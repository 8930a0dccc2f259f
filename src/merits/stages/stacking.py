"""Out-of-fold Stage I outputs (stacking), so that Stage II trains on inputs as noisy as the ones it is tested on.

Why: a fine-tuned Stage I is far better on the utterances it was trained on than on unseen ones (MELD: train
weighted F1 0.80, test 0.61), so a Stage II trained on its training-set outputs learns to trust inputs that do not
transfer. With ``stacking.folds: K`` the training conversations are split into K folds (whole conversations, seeded
by the run's seed); K Stage I models are trained, each on the other K - 1 folds, and each fold's training inputs
come from the model that never saw it. Validation and test inputs come from the K fold models averaged
(``heldout: average``) or from one more Stage I trained on all training data (``heldout: full``).

Fine-tuned models' embeddings are not aligned with each other (dimension i of one fold's model means nothing to
another's), so what Stage II reads (``stage2_*.reads``) matters here: ``logits`` are aligned by construction.

Layout: the stage's ``seed-<k>/`` holds the stacked exports (embeddings.safetensors with embeddings and logits,
predictions.csv, metrics.json: the training split's scores are out-of-fold) and ``checkpoint/stage.json`` naming
its members; the members are cached like stages under ``<stage>/folds/seed-<k>/fold-<j>/`` (and ``full/``), so a
killed run resumes per fold and changing ``heldout`` reuses the folds already trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from merits import __version__
from merits.config import config_hash
from merits.data.manifest import Manifest
from merits.errors import ConfigError, read_json
from merits.models.utterance import UtteranceOutput
from merits.runs import EMBEDDINGS, load_embeddings, run_cached
from merits.runtime import seed_everything
from merits.stages.base import STAGE_FILE, Stage, TrainingData, register_stage, save_stage_info
from merits.stages.common import export, splits_present
from merits.training import Predictions

HELD_OUT = "test"  # a fold model predicts its held-out fold as (an extra part of) its test split


@dataclass
class StackingConfig:
    folds: int = 0             # K >= 2: out-of-fold Stage I outputs for the training conversations; 0 = off
    heldout: str = "average"   # validation / test inputs: average (of the K fold models) | full (one more Stage I on
                               # all training data)

    def __post_init__(self) -> None:
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"folds: {self.folds} (give 0 for no stacking, or at least 2 folds)")
        if self.heldout not in ("average", "full"):
            raise ConfigError(f"heldout: {self.heldout!r} is not average | full")


def assign_folds(conversations, folds: int, seed: int) -> dict[str, int]:
    """conversation id -> fold (0..K-1): a seeded permutation cut into K near-equal parts."""
    ids = sorted(set(map(str, conversations)))
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i]: int(k) for k, part in enumerate(np.array_split(order, folds)) for i in part}


def fold_manifest(manifest: Manifest, fold: dict[str, int], j: int) -> Manifest:
    """The manifest fold model ``j`` trains on: the training conversations of fold ``j`` move to the test split
    (it predicts them, never trains on them); validation stays for model selection."""
    t = manifest.table.copy()
    held = (t["split"] == "train") & (t["conversation_id"].map(fold).eq(j))
    t.loc[held, "split"] = HELD_OUT
    return dataclasses.replace(manifest, table=t)


class MeanEnsemble(nn.Module):
    """K utterance models on one batch; their logits (B, C) and embeddings (B, D) averaged. The averaged logits are
    what the training inputs' out-of-fold logits estimate; averaged embeddings of separately fine-tuned models are
    not aligned (measured, not assumed)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, **inputs) -> UtteranceOutput:
        outs = [m(**inputs) for m in self.members]
        return UtteranceOutput(torch.stack([o.logits for o in outs]).mean(0),
                               torch.stack([o.embeddings for o in outs]).mean(0))


@dataclass
class StackedSettings:
    """The wrapped Stage I's settings and the stacking section."""

    inner: object
    stacking: StackingConfig


@register_stage
class OutOfFoldStage(Stage):
    """A Stage I (text or speech) trained out of fold; it has the wrapped stage's name, needs and modalities, and
    replays with the wrapped stage's replay settings (its stage.json also names the ensemble's members)."""

    kind = "out_of_fold"
    level = "utterance"

    def __init__(self, inner: Stage):
        super().__init__(inner.name, inner.label, inner.section, inner.needs, inner.modalities)
        self.inner = inner
        self.distributed = inner.distributed

    def settings(self, cfg) -> StackedSettings:
        return StackedSettings(self.inner.settings(cfg), cfg.stacking)

    def key_parts(self, s: StackedSettings, data) -> tuple:
        return (*self.inner.key_parts(s.inner, data), s.stacking)

    def check(self, s: StackedSettings) -> None:
        self.inner.check(s.inner)

    # ------------------------------------------------------------------ training
    def train(self, s: StackedSettings, data, inputs, seed: int, out: Path, runtime) -> dict:
        st, manifest = s.stacking, data.manifest(self)
        fold = assign_folds(data.utterances.table.loc[data.utterances.table["split"] == "train", "conversation_id"],
                            st.folds, seed)
        home = out.parent / "folds" / out.name.removesuffix(".partial")  # <stage>/folds/seed-<k>/
        base = config_hash(self.name, __version__, *self.inner.key_parts(s.inner, data), st.folds, seed)
        members: dict[str, dict] = {}
        for j in range(st.folds):
            audio = fold_manifest(data.with_audio, fold, j) if data.with_audio is not None else None
            part = TrainingData(fold_manifest(data.utterances, fold, j), data.features, audio)
            members[f"fold-{j}"] = run_cached(home / f"fold-{j}", config_hash(base, "fold", j),
                                              _compute(self.inner, s.inner, part, inputs, seed, runtime),
                                              self.distributed)
        if st.heldout == "full":
            members["full"] = run_cached(home / "full", config_hash(base, "full"),
                                         _compute(self.inner, s.inner, data, inputs, seed, runtime), self.distributed)
        if not runtime.dist.is_main:
            return {}
        preds = self._stacked(manifest, fold, home, st)
        metrics = export(preds, manifest, out, self.label)
        member = read_json(home / "fold-0" / "checkpoint" / STAGE_FILE, "retrain the run")["replay"]
        ensemble = [f"fold-{j}" for j in range(st.folds)] if st.heldout == "average" else ["full"]
        save_stage_info(out / "checkpoint", self, manifest.labels, self.inner.read_replay(member),
                        inner_kind=self.inner.kind, stacking=asdict(st),
                        # relative to this checkpoint: the run folder moves as a whole
                        members=[f"../../folds/{home.name}/{m}/checkpoint" for m in ensemble])
        metrics["folds"] = {m: {"best_epoch": r.get("best_epoch"),
                                "validation_weighted_f1": r.get("validation", {}).get("weighted_f1")}
                            for m, r in members.items()}
        metrics["out_of_fold"] = True
        return metrics

    def _stacked(self, manifest: Manifest, fold: dict[str, int], home: Path, st: StackingConfig) -> dict:
        """Per split, the stacked Predictions: training rows from the fold model that held them out; validation and
        test rows averaged over the fold models (or from the full model)."""
        outputs = {}
        for name in [f"fold-{j}" for j in range(st.folds)] + (["full"] if st.heldout == "full" else []):
            ids, arrays = load_embeddings(home / name / EMBEDDINGS)
            outputs[name] = ({u: i for i, u in enumerate(ids)}, arrays["embeddings"], arrays["logits"])
        t = manifest.table
        labels = manifest.label_ids()
        preds = {}
        for split in splits_present(manifest):
            rows = np.flatnonzero(t["split"].to_numpy() == split)
            ids = t["utterance_id"].to_numpy()[rows]
            if split == "train":
                sources = [[f"fold-{fold[c]}"] for c in t["conversation_id"].to_numpy()[rows]]
            else:
                sources = [["full"] if st.heldout == "full" else [f"fold-{j}" for j in range(st.folds)]] * len(rows)
            emb = np.stack([np.mean([outputs[s][1][outputs[s][0][u]] for s in src], 0) for u, src in zip(ids, sources)])
            logit = np.stack([np.mean([outputs[s][2][outputs[s][0][u]] for s in src], 0) for u, src in zip(ids, sources)])
            preds[split] = Predictions(list(ids), labels[rows], logit.astype(np.float32), emb.astype(np.float32))
        return preds

    # ------------------------------------------------------------------ replay
    def load(self, checkpoint: Path) -> MeanEnsemble:
        meta = read_json(checkpoint / STAGE_FILE, "retrain the run with merits train")
        members = []
        for rel in meta["replay"]["members"]:
            path = (checkpoint / rel).resolve()
            if not (path / STAGE_FILE).is_file():
                raise ConfigError(f"{checkpoint}: the out-of-fold member {path} is missing; retrain the run")
            members.append(self.inner.load(path))
        return MeanEnsemble(members)

    def read_replay(self, values: dict):
        return self.inner.read_replay(values)  # the members replay as the wrapped stage does

    def batches(self, model: MeanEnsemble, view, inputs, replay):
        return self.inner.batches(model.members[0], view, inputs, replay)  # the members share tokeniser / features


def _compute(inner: Stage, settings, data, inputs, seed: int, runtime):
    """The wrapped stage trained on ``data`` into a cached member directory."""

    def compute(out: Path) -> dict:
        seed_everything(seed)
        return inner.train(settings, data, inputs, seed, out, runtime)

    return compute

