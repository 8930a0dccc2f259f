"""A stage type added in one file: registered with ``register_stage``, placed with ``register_placement``, it is
trained by ``merits train``, reported in Table I, replayed by ``merits predict`` and answered by ``merits serve``, and
nothing in merits names it. The toy stage is a real one: a linear recalibration of Text II's logits, trained by the
one Trainer on the training split and selected on validation like every stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from merits.data.manifest import SPLITS
from merits.models.checkpoint import load_model, save_model
from merits.models.utterance import UtteranceOutput
from merits.runs import EMBEDDINGS
from merits.stages import graph
from merits.stages.base import STAGES, Replay, Stage, register_stage, save_stage_info
from merits.stages.common import export, fit_summary, load_aligned
from merits.training import IGNORE, Trainer, TrainerConfig, adamw


@dataclass
class RecalibrationConfig(TrainerConfig):
    epochs: int = 3
    lr: float = 1e-2


@dataclass
class RecalibrationModelConfig:
    classes: int = 2


class Recalibration(nn.Module):
    def __init__(self, config: RecalibrationModelConfig):
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.classes, config.classes)

    def forward(self, logits):  # (B, C) Text II logits -> (B, C) recalibrated
        out = self.linear(logits)
        return UtteranceOutput(out, out)


def rows_batches(x: np.ndarray, manifest, rows: np.ndarray, size: int) -> list[dict]:
    labels, ids = manifest.label_ids(), manifest.table["utterance_id"].to_numpy()
    return [{"inputs": {"logits": torch.as_tensor(x[c])},
             "labels": torch.as_tensor(np.where(labels[c] >= 0, labels[c], IGNORE)), "utterance_ids": list(ids[c])}
            for c in (rows[i:i + size] for i in range(0, len(rows), size))]


class RecalibrationStage(Stage):
    kind = "toy_recalibration"
    level = "utterance"

    def settings(self, cfg) -> RecalibrationConfig:
        return RecalibrationConfig()  # no section of the experiment: its own defaults

    def train(self, sc, data, inputs, seed, out: Path, runtime) -> dict:
        manifest = data.manifest(self)
        (need,) = self.needs
        x = load_aligned(inputs[need] / EMBEDDINGS, manifest, "logits")  # (N, C) in manifest order
        split = manifest.table["split"].to_numpy()
        rows = {s: np.flatnonzero(split == s) for s in SPLITS if (split == s).any()}
        model = Recalibration(RecalibrationModelConfig(x.shape[1]))
        trainer = Trainer(sc, runtime, self.label)
        result = trainer.fit(model, lambda e: rows_batches(x, manifest, rows["train"], sc.batch_size),
                             lambda: rows_batches(x, manifest, rows["validation"], 64), adamw(model, sc.lr, 0.0))
        save_model(model, out / "checkpoint")
        save_stage_info(out / "checkpoint", self, manifest.labels, Replay(batch_size=64, reads={need: "logits"}))
        preds = {s: trainer.predict(model, rows_batches(x, manifest, r, 64)) for s, r in rows.items()}
        return {**export(preds, manifest, out, self.label), **fit_summary(result)}

    def load(self, checkpoint: Path):
        return load_model(Recalibration, RecalibrationModelConfig, checkpoint)

    def batches(self, model, view, inputs, replay):
        (need,) = self.needs
        return rows_batches(inputs[need], view.utterances, np.arange(len(view.utterances.table)), replay.batch_size)


def place(cfg, nodes):
    if "text" in cfg.modalities:
        nodes.append(RecalibrationStage("recalibrated", "Text II cal", "recalibrated", ("stage2_text",), ("text",)))


@pytest.fixture
def plugged(monkeypatch):
    monkeypatch.setitem(STAGES, RecalibrationStage.kind, RecalibrationStage)
    monkeypatch.setattr(graph, "PLACEMENTS", [place])
    assert register_stage(RecalibrationStage) is RecalibrationStage
    yield


def test_a_stage_added_in_one_file_trains_reports_predicts_and_serves(plugged, tmp_path, tiny_encoder):
    from fastapi.testclient import TestClient

    from merits.data.manifest import Manifest
    from merits.experiment import load_experiment
    from merits.pipeline import run_experiment
    from merits.predict import TrainedRun, predict_run
    from merits.serve import ServeConfig, create_app

    cfg = load_experiment("offline", ["data.max_conversations=4", "data.options.strict_counts=false",
                                          f"text_encoder.model={tiny_encoder}", "stage1_text.epochs=1",
                                          "stage2_text.epochs=1", "seeds=[0]", f"runs_dir={tmp_path}", "name=plug"])
    result = run_experiment(cfg)
    assert "Text II cal" in result["table"] and 0 in result["per_seed"]["recalibrated"]
    run = TrainedRun.open(tmp_path / "plug")
    assert run.final_stage() == "recalibrated"
    manifest = Manifest.load(run.directory / "manifest")
    test = manifest.select(manifest.split("test")["utterance_id"])
    replay = predict_run(run, test, tmp_path / "p")
    recorded = result["per_seed"]["recalibrated"][0]["test"]["weighted_f1"]
    assert replay.summary["stage"] == "recalibrated"
    assert replay.summary["scores"]["recalibrated"]["test"]["weighted_f1"] == pytest.approx(recorded, abs=1e-9)
    app = create_app(tmp_path / "plug", ServeConfig(live_store=str(tmp_path / "live.sqlite")))
    with TestClient(app, base_url="http://localhost") as client:
        answer = client.post("/v1/predict", json={"conversations": [
            {"id": "c", "turns": [{"text": "I can't believe it!"}, {"text": "That's wonderful news."}]}]}).json()
    turns = answer["conversations"][0]["turns"]
    assert answer["stage"] == "recalibrated" and all(t["label"] == t["stages"]["recalibrated"] for t in turns)
