"""End to end: Stage I -> Stage II text for one epoch on a few real MELD dialogues, with resume and the CLI."""

import json
from pathlib import Path

import pandas as pd
import pytest

from merits.cli import main
from merits.experiment import load_experiment
from merits.pipeline import run_experiment

QUICK = ["data.max_conversations=4", "data.options.strict_counts=false", "stage1_text.epochs=1",
         "stage2_text.epochs=1", "seeds=[0, 1]"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    cfg = load_experiment("offline", QUICK + [f"runs_dir={runs}", "name=e2e"])
    return cfg, run_experiment(cfg)


def test_end_to_end_outputs(finished):
    cfg, result = finished
    root = Path(cfg.runs_dir) / "e2e"
    for stage in ("stage1_text", "stage2_text"):
        for seed in (0, 1):
            d = root / stage / f"seed-{seed}"
            m = json.loads((d / "metrics.json").read_text())
            assert 0.0 <= m["test"]["weighted_f1"] <= 1.0
            assert len(m["test"]["confusion"]) == 7
            for f in ("embeddings.safetensors", "predictions.csv", "confusion_test.png", "done.json"):
                assert (d / f).is_file(), d / f
    assert (root / "stage1_text" / "seed-0" / "checkpoint" / "encoder" / "model.safetensors").is_file()
    assert (root / "manifest" / "manifest.csv").is_file() and (root / "stages.png").is_file()
    table = result["table"]
    assert "| Text I |" in table and "| Text II |" in table and "±" in table
    summary = json.loads((root / "results.json").read_text())["summary"]
    assert summary["stage2_text"]["weighted_f1"]["n"] == 2


def test_rerun_skips_every_stage(finished, monkeypatch):
    cfg, first = finished
    from merits.stages import context, text_utterance

    def boom(*a, **k):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(text_utterance.TextUtteranceStage, "train", boom)
    monkeypatch.setattr(context.ContextStage, "train", boom)
    again = run_experiment(cfg)
    assert again["table"] == first["table"]


def test_predict_with_several_seeds_averages_their_probabilities(finished, tmp_path, capsys):
    """merits predict on new MELD-style conversations: --seed all is the mean of the per-seed probabilities."""
    cfg, _ = finished
    root = Path(cfg.runs_dir) / "e2e"
    data = tmp_path / "calls.jsonl"
    rows = [{"conversation_id": "c1", "text": "Oh my God, you got the job!"}, {"conversation_id": "c1", "text": "I did."},
            {"conversation_id": "c2", "text": "Get out of my apartment."}]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    tables = {}
    for seeds in (["0"], ["1"], ["all"]):
        out = tmp_path / "-".join(seeds)
        assert main(["-q", "predict", str(root), str(data), "--seed", *seeds, "--out", str(out)]) == 0
        tables[seeds[0]] = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert "averaged over seeds [0, 1]" in capsys.readouterr().out
    p = [c for c in tables["all"].columns if c.startswith("p_")]
    assert len(p) == 7 and list(tables["all"]["utterance_id"]) == ["c1_0", "c1_1", "c2_0"]
    mean = (tables["0"][p].to_numpy() + tables["1"][p].to_numpy()) / 2
    assert abs(tables["all"][p].to_numpy() - mean).max() < 1e-3
    assert (tables["all"]["predicted"] == [p[i][2:] for i in mean.argmax(1)]).all()
    assert main(["-q", "predict", str(root), str(data), "--seed", "zero", "--out", str(tmp_path / "x")]) == 2
    assert "--seed takes seed numbers" in capsys.readouterr().err


def test_changed_stage2_config_reruns_only_stage2(finished, monkeypatch):
    cfg, _ = finished
    from merits.stages import text_utterance

    monkeypatch.setattr(text_utterance.TextUtteranceStage, "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("Stage I reran")))
    cfg2 = load_experiment("offline", QUICK + [f"runs_dir={cfg.runs_dir}", "name=e2e", "stage2_text.model.hidden=32"])
    result = run_experiment(cfg2)
    assert "| Text II |" in result["table"]


def test_cli_prepare_and_errors(capsys, tmp_path):
    assert main(["-q", "prepare", "meld", "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "9989" in out and (tmp_path / "m" / "manifest.csv").is_file()
    assert main(["-q", "prepare", "meld", "--root", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["-q", "train", "offline", "stage1_text.epochz=1"]) == 2
    assert "epochz" in capsys.readouterr().err
    assert main(["-q", "report", str(tmp_path)]) == 2


def test_speech_branch_end_to_end_on_mosi(tmp_path):
    """Stage I -> II speech for one epoch on a few real CMU-MOSI videos (the 73 precomputed features)."""
    from conftest import shared

    table = shared("mosi", "mosi_utterances.csv")
    cfg = load_experiment("mosi-offline", [f"data.root={table}", f"speech_encoder.model={table}", "modalities=[audio]",
                                           "data.max_conversations=3", "data.options.strict_counts=false",
                                           "stacking.folds=0",  # the plain Stage I (the profile stacks: test_stacking)
                                           "stage1_audio.epochs=1", "stage2_audio.epochs=1", "seeds=[0]",
                                           f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", "name=mosi"])
    result = run_experiment(cfg)
    assert "| Audio I |" in result["table"] and "| Audio II |" in result["table"]
    assert "Text" not in result["table"]
    m1 = json.loads((tmp_path / "runs/mosi/stage1_audio/seed-0/metrics.json").read_text())
    assert len(m1["layer_weights"]) == 1 and m1["test"]["n"] > 0
    from merits.runs import load_embeddings

    ids, arrays = load_embeddings(tmp_path / "runs/mosi/stage1_audio/seed-0/embeddings.safetensors")
    assert arrays["embeddings"].shape == (len(ids), 256)
    ids2, arrays2 = load_embeddings(tmp_path / "runs/mosi/stage2_audio/seed-0/embeddings.safetensors")
    assert sorted(ids2) == sorted(ids)


def test_whole_hierarchy_on_mosi(tmp_path):
    """Stage I and II text and speech, then Stage III fusion, one epoch each on a few real CMU-MOSI videos."""
    from conftest import shared

    table = shared("mosi", "mosi_utterances.csv")
    cfg = load_experiment("mosi-offline", [f"data.root={table}", f"speech_encoder.model={table}",
                                           "data.max_conversations=2", "data.options.strict_counts=false",
                                           "stage1_text.epochs=1", "stage2_text.epochs=1", "stage1_audio.epochs=1",
                                           "stage2_audio.epochs=1", "stage3.epochs=1", "seeds=[0]",
                                           f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", "name=all"])
    table_md = run_experiment(cfg)["table"]
    for row in ("Audio I", "Audio II", "Text I", "Text II", "Audio+Text III"):
        assert f"| {row} |" in table_md
    m3 = json.loads((tmp_path / "runs/all/stage3/seed-0/metrics.json").read_text())
    assert 0.0 <= m3["test"]["weighted_f1"] <= 1.0
    assert (tmp_path / "runs/all/stage3/seed-0/checkpoint/model.safetensors").is_file()
    # merits predict on the run's test videos: the precomputed acoustic features need no audio file
    from merits.data.manifest import Manifest
    from merits.predict import TrainedRun, predict_run

    saved = Manifest.load(tmp_path / "runs/all/manifest")
    test = saved.select(saved.split("test")["utterance_id"])
    replay = predict_run(TrainedRun.open(tmp_path / "runs/all"), test, tmp_path / "predicted")
    assert replay.summary["scores"]["stage3"]["test"]["weighted_f1"] == pytest.approx(m3["test"]["weighted_f1"])


def test_causal_run_predicts_online_by_construction(tmp_path):
    """causal: true on Stages II and III (for live use): trained from the config, and its whole-conversation
    predictions equal the turn-by-turn (--online) ones."""
    from conftest import shared
    from merits.data.manifest import Manifest
    from merits.predict import TrainedRun, predict_run

    table = shared("mosi", "mosi_utterances.csv")
    cfg = load_experiment("mosi-offline", [f"data.root={table}", f"speech_encoder.model={table}",
                                           "data.max_conversations=2", "data.options.strict_counts=false",
                                           "stage1_text.epochs=1", "stage2_text.epochs=1", "stage1_audio.epochs=1",
                                           "stage2_audio.epochs=1", "stage3.epochs=1", "seeds=[0]",
                                           "stage2_text.model.causal=true", "stage2_audio.model.causal=true", "stage3.model.causal=true",
                                           f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", "name=live"])
    run_experiment(cfg)
    run = TrainedRun.open(tmp_path / "runs" / "live")
    saved = Manifest.load(run.directory / "manifest")
    test = saved.select(saved.split("test")["utterance_id"])
    whole = predict_run(run, test, tmp_path / "whole").table
    result = predict_run(run, test, tmp_path / "online", online=True)  # one pass: no prefix replay for causal runs
    online = result.table.set_index("utterance_id")
    assert result.summary["online_mode"] == "causal, one pass"
    p = [c for c in whole.columns if c.startswith("p_")]
    assert abs(whole[p].to_numpy() - result.table[p].to_numpy()).max() < 1e-3
    # that one pass is what a live system sees: a turn's output equals the one on the conversation cut after it
    t = test.table
    conv = t.groupby("conversation_id")["turn"].count().idxmax()
    turns = t[t["conversation_id"] == conv].sort_values("turn").reset_index(drop=True)
    for k in (0, len(turns) // 2):
        cut = predict_run(run, test.select(turns["utterance_id"][:k + 1]), tmp_path / f"cut{k}").table.set_index("utterance_id")
        u = turns.at[k, "utterance_id"]
        assert abs(online.loc[u, p].to_numpy(float) - cut.loc[u, p].to_numpy(float)).max() < 2e-4
    assert json.loads((run.directory / "stage3/seed-0/checkpoint/model_config.json").read_text())["config"]["causal"]


def test_iemocap_paper_profile_whole_hierarchy_on_the_release_fixture(tmp_path, iemocap_run):
    """The IEMOCAP paper profile end to end (Stages I-III and the combined ablation, one epoch) on a synthetic release
    in the official layout, with audio (the run itself is the conftest fixture ``iemocap_run``)."""
    cfg, result, root = iemocap_run
    assert cfg.speech_encoder.kind == "hf" and cfg.modalities == ["text", "audio"]
    for row in ("Audio I", "Audio II", "Text I", "Text II", "Audio+Text III", "Combined (II + III jointly)"):
        assert f"| {row} |" in result["table"]
    for stage in ("stage1_text", "stage1_audio", "stage2_text", "stage2_audio", "stage3", "combined"):
        m = json.loads((root / stage / "seed-0" / "metrics.json").read_text())
        assert m["test"]["labels"] == ["anger", "happiness", "sadness", "neutral"]
        assert m["test"]["n"] > 0 and (root / stage / "seed-0" / "confusion_test.png").is_file()
    # Session 5 is the test set: every test prediction is a Session 5 utterance
    preds = pd.read_csv(root / "stage3" / "seed-0" / "predictions.csv")
    assert preds.loc[preds["split"] == "test", "utterance_id"].str.startswith("Ses05").all()
    assert (root / "stages.png").is_file() and "per class" in (root / "report.md").read_text()
    # several finished runs -> one Table I with a column each, plus a grouped bar chart
    assert main(["-q", "report", str(root), str(root), "--out", str(tmp_path / "both")]) == 0
    table = (tmp_path / "both" / "table.md").read_text()
    assert "| Modality (stage) | IEMOCAP | IEMOCAP (iemocap) |" in table and "| Combined (II + III jointly) |" in table
    assert (tmp_path / "both" / "stages.png").stat().st_size > 0


def test_the_tables_metric_is_selectable_without_retraining(finished, tmp_path, capsys):
    """merits report RUN --metric macro_f1 / micro_f1 --classes ...: computed from the saved confusion matrices,
    equal to scikit-learn on the saved predictions; a subset the run lacks, or --classes alone, is an error."""
    import shutil

    import numpy as np
    from sklearn.metrics import f1_score

    from merits.report import combine

    cfg, _ = finished
    run = tmp_path / "e2e"
    shutil.copytree(Path(cfg.runs_dir) / "e2e", run)
    own = {f: (run / f).read_bytes() for f in ("results.json", "report.md")}
    assert main(["-q", "report", str(run), "--metric", "micro_f1", "--classes", "anger,joy,sadness"]) == 0
    shown = capsys.readouterr().out
    assert "Test micro F1 over anger, joy, sadness (%)" in shown and "report-micro_f1-anger-joy-sadness.md" in shown
    assert {f: (run / f).read_bytes() for f in own} == own  # the run's own report is left alone
    result = json.loads((run / "results-micro_f1-anger-joy-sadness.json").read_text())
    assert result["metric"] == {"name": "micro_f1", "classes": ["anger", "joy", "sadness"],
                                "title": "micro F1 over anger, joy, sadness"}
    labels = json.loads((run / "manifest" / "manifest.json").read_text())["labels"]
    expected = []
    for seed in (0, 1):
        p = pd.read_csv(run / "stage2_text" / f"seed-{seed}" / "predictions.csv", keep_default_na=False)
        p = p[(p["split"] == "test") & (p["label"] != "")]
        ids = {n: i for i, n in enumerate(labels)}
        expected.append(f1_score(p["label"].map(ids), p["predicted"].map(ids), average="micro",
                                 labels=[ids[c] for c in ("anger", "joy", "sadness")], zero_division=0))
    assert result["summary"]["stage2_text"]["score"]["values"] == pytest.approx(expected)
    assert main(["-q", "report", str(run), "--metric", "macro_f1"]) == 0
    assert "Test macro F1 (%)" in capsys.readouterr().out
    macro = json.loads((run / "results-macro_f1.json").read_text())["summary"]["stage1_text"]
    assert macro["score"]["values"] == pytest.approx(macro["macro_f1"]["values"])
    assert main(["-q", "report", str(run), "--metric", "micro_f1", "--classes", "joy,boredom"]) == 2
    assert "boredom" in capsys.readouterr().err
    assert main(["-q", "report", str(run), "--classes", "joy"]) == 2
    assert "macro F1" in combine([run, run], suffix="-macro_f1")  # several runs in the metric asked for
    other = tmp_path / "other"
    shutil.copytree(run, other)
    shutil.copyfile(other / "results-macro_f1.json", other / "results.json")
    with pytest.raises(Exception, match="different metrics"):  # one table, one metric
        combine([run, other])
    assert np.isfinite(macro["score"]["mean"])
    with pytest.raises(Exception, match="metric"):
        load_experiment("offline", ["metric=f2"])


def test_the_report_advises_on_epochs_that_look_mis_set():
    from merits.report import training_advice

    def fit(best, run):
        return {"best_epoch": best, "history": [{"epoch": e + 1} for e in range(run)]}

    advice = training_advice({"stage1_text": {0: fit(1, 3), 1: fit(1, 3)}, "stage2_text": {0: fit(5, 5)},
                              "stage3": {0: fit(3, 6)}}, {"stage1_text": "Text I", "stage2_text": "Text II"})
    assert len(advice) == 2
    assert "Text I: kept epoch 1 (of 3 run)" in advice[0] and "stage1_text.lr" in advice[0]
    assert "Text II: best epoch 5 was the last one run" in advice[1] and "stage2_text.epochs" in advice[1]
