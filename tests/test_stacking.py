"""Stacking: out-of-fold Stage I outputs (stacking.folds), what Stage II / III read (reads), fold caching and replay."""

import json

import numpy as np
import pandas as pd
import pytest

from conftest import shared
from merits.experiment import load_experiment
from merits.errors import ConfigError
from merits.pipeline import run_experiment
from merits.predict import TrainedRun, predict_run
from merits.runs import load_embeddings
from merits.stages.speech_utterance import SpeechUtteranceStage
from merits.stages.stacking import assign_folds, fold_manifest


def mosi_audio(tmp_path, name, *extra):
    table = shared("mosi", "mosi_utterances.csv")
    return load_experiment("mosi-offline", [f"data.root={table}", f"speech_encoder.model={table}", "modalities=[audio]",
                                            "data.max_conversations=9", "data.options.strict_counts=false",
                                            "stage1_audio.epochs=3", "stage2_audio.epochs=2", "seeds=[0]",
                                            f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}",
                                            f"name={name}", "stacking.folds=3", *extra])


def test_folds_are_whole_conversations_seeded_and_held_out():
    folds = assign_folds([f"c{i}" for i in range(10)] * 2, 3, seed=0)
    assert sorted(folds.values()).count(0) in (3, 4) and set(folds.values()) == {0, 1, 2}
    assert folds == assign_folds([f"c{i}" for i in range(10)], 3, seed=0)  # order and repeats do not matter
    assert folds != assign_folds([f"c{i}" for i in range(10)], 3, seed=1)
    from merits.data import prepare

    m = prepare("meld").subset(6)
    f = assign_folds(m.split("train")["conversation_id"], 3, seed=0)
    t = fold_manifest(m, f, 1).table
    held = t["conversation_id"].map(f).eq(1) & m.table["split"].eq("train")
    assert (t.loc[held, "split"] == "test").all() and not (t.loc[~held, "split"] != m.table.loc[~held, "split"]).any()
    with pytest.raises(ConfigError, match="folds"):
        load_experiment("offline", ["stacking.folds=1"])
    with pytest.raises(ConfigError, match="reads"):
        load_experiment("offline", ["stage2_text.reads=probabilities"])


def test_out_of_fold_stage_one_resumes_per_fold_and_replays(tmp_path, monkeypatch):
    """Each training utterance's Stage I output comes from the fold model that never saw it; validation and test
    are the fold models' mean; a run killed during fold 2 resumes there; heldout=full reuses the folds; predict
    replays the ensemble to the same Stage II scores."""
    trained = []
    real = SpeechUtteranceStage.train

    def counting(self, cfg, data, inputs, seed, out, runtime):
        trained.append(out.name.removesuffix(".partial"))
        if len(trained) == 2 and fail["now"]:
            raise KeyboardInterrupt  # killed while training the second fold
        return real(self, cfg, data, inputs, seed, out, runtime)

    fail = {"now": True}
    monkeypatch.setattr(SpeechUtteranceStage, "train", counting)
    cfg = mosi_audio(tmp_path, "oof", "stage2_audio.reads=logits")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg)
    fail["now"] = False
    run_experiment(cfg)
    assert trained == ["fold-0", "fold-1", "fold-1", "fold-2"]  # fold 0 was kept, not trained again
    root = tmp_path / "runs" / "oof" / "stage1_audio"
    ids, stacked = load_embeddings(root / "seed-0" / "embeddings.safetensors")
    row = {u: i for i, u in enumerate(ids)}
    folds = {}
    for j in range(3):
        fids, arrays = load_embeddings(root / "folds" / "seed-0" / f"fold-{j}" / "embeddings.safetensors")
        folds[j] = ({u: i for i, u in enumerate(fids)}, arrays["logits"])
    manifest = pd.read_csv(tmp_path / "runs" / "oof" / "manifest" / "manifest.csv", keep_default_na=False)
    split = dict(zip(manifest["utterance_id"], manifest["split"]))
    fold_of = assign_folds(manifest.loc[manifest["split"] == "train", "conversation_id"], 3, 0)
    conv = dict(zip(manifest["utterance_id"], manifest["conversation_id"]))
    for u in ids:
        if split[u] == "train":
            j = fold_of[conv[u]]
            expected = folds[j][1][folds[j][0][u]]
            held = pd.read_csv(root / "folds" / "seed-0" / f"fold-{j}" / "predictions.csv")
            assert held.set_index("utterance_id").at[u, "split"] == "test"  # predicted by a model that held it out
        else:
            expected = np.mean([folds[j][1][folds[j][0][u]] for j in range(3)], axis=0)
        np.testing.assert_allclose(stacked["logits"][row[u]], expected, rtol=1e-5, atol=1e-6)
    metrics = json.loads((root / "seed-0" / "metrics.json").read_text())
    assert metrics["out_of_fold"] and set(metrics["folds"]) == {"fold-0", "fold-1", "fold-2"} and "train" in metrics
    stage2 = tmp_path / "runs" / "oof" / "stage2_audio" / "seed-0"
    replay = json.loads((stage2 / "checkpoint" / "stage.json").read_text())["replay"]
    assert replay["reads"] == {"stage1_audio": "logits"}
    # predict replays the mean of the fold models, then Stage II on their logits: the recorded scores
    run = TrainedRun.open(tmp_path / "runs" / "oof")
    from merits.pipeline import build_manifest

    out = predict_run(run, build_manifest(run.cfg), tmp_path / "pred")
    recorded = json.loads((stage2 / "metrics.json").read_text())["test"]["weighted_f1"]
    assert out.summary["scores"]["stage2_audio"]["test"]["weighted_f1"] == pytest.approx(recorded, abs=1e-9)
    # exported, the fold members travel with the stacked stage: the same predictions from the model folder
    from merits.export import export_run

    export_run(tmp_path / "runs" / "oof", tmp_path / "model")
    assert (tmp_path / "model" / "stage1_audio" / "folds" / "seed-0" / "fold-2" / "checkpoint" / "stage.json").is_file()
    again = predict_run(TrainedRun.open(tmp_path / "model"), build_manifest(run.cfg), tmp_path / "pred-model")
    pd.testing.assert_frame_equal(out.table, again.table)
    # heldout=full: the three folds are reused, one more Stage I trains on all the training data
    trained.clear()
    run_experiment(mosi_audio(tmp_path, "oof", "stage2_audio.reads=logits", "stacking.heldout=full"))
    assert trained == ["full"]


def test_text_stage_one_out_of_fold_with_stage_two_on_embeddings_and_logits(tmp_path, tiny_encoder):
    """Stage I text out of fold (2 folds, the fine-tuned encoder per fold), Stage II reading embeddings + logits
    side by side; the replay through the ensemble of fold encoders gives the recorded scores."""
    cfg = load_experiment("offline", ["data.max_conversations=6", "data.options.strict_counts=false", "stage1_text.epochs=1",
                                      "stage2_text.epochs=2", "seeds=[0]", f"text_encoder.model={tiny_encoder}",
                                      f"runs_dir={tmp_path}", "name=text-oof", "stacking.folds=2", "stage2_text.reads=both"])
    run_experiment(cfg)
    root = tmp_path / "text-oof"
    ids, arrays = load_embeddings(root / "stage1_text" / "seed-0" / "embeddings.safetensors")
    assert arrays["embeddings"].shape == (len(ids), 32) and arrays["logits"].shape == (len(ids), 7)
    model = json.loads((root / "stage2_text" / "seed-0" / "checkpoint" / "model_config.json").read_text())
    assert model["config"]["input_dim"] == 32 + 7  # embeddings and logits side by side
    from merits.pipeline import build_manifest

    run = TrainedRun.open(root)
    out = predict_run(run, build_manifest(run.cfg), tmp_path / "pred")
    for stage in ("stage1_text", "stage2_text"):
        recorded = json.loads((root / stage / "seed-0" / "metrics.json").read_text())["test"]["weighted_f1"]
        assert out.summary["scores"][stage]["test"]["weighted_f1"] == pytest.approx(recorded, abs=1e-9), stage
