"""The stage graph and what walks it: graph shapes per config, reproducibility, one process per seed merged by the
report, stage locks, outputs verified before a skip, and clear errors for runs of older versions."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import shared
from merits.cli import main
from merits.experiment import load_experiment
from merits.errors import ConfigError
from merits.pipeline import report_run, run_experiment
from merits.runs import run_cached
from merits.stages.base import STAGES
from merits.stages.graph import build_graph


def mosi(tmp_path, name, *extra):
    table = shared("mosi", "mosi_utterances.csv")
    return load_experiment("mosi-offline", [f"data.root={table}", f"speech_encoder.model={table}", "data.max_conversations=3",
                                            "data.options.strict_counts=false", "stage1_text.epochs=1", "stage2_text.epochs=3",
                                            "stage1_audio.epochs=3", "stage2_audio.epochs=3", "stage3.epochs=3", "seeds=[0]",
                                            f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}", f"name={name}",
                                            *extra])


def test_graph_follows_the_config():
    text = build_graph(load_experiment("offline"))
    assert [s.name for s in text] == ["stage1_text", "stage2_text"] and text.final.name == "stage2_text"
    both = build_graph(load_experiment("mosi-offline", ["combined=true"]))
    assert [s.name for s in both] == ["stage1_audio", "stage2_audio", "stage1_text", "stage2_text", "stage3", "combined"]
    assert both.final.name == "stage3" and both["combined"].needs == ("stage1_text", "stage1_audio")
    assert [s.name for s in both.chain("stage2_text")] == ["stage1_text", "stage2_text"]
    assert [label for label, _ in both.rows()] == ["Audio I", "Audio II", "Text I", "Text II", "Audio+Text III"]
    assert set(STAGES) == {"text_utterance", "speech_utterance", "context", "fusion", "combined", "out_of_fold"}
    # the config checks walk the graph: a model setting is checked where the stage has it
    with pytest.raises(ConfigError, match=r"stage2_audio\.model\.heads \(3\) must divide"):
        load_experiment("mosi-offline", ["stage2_audio.model.heads=3"])


def test_same_config_and_seed_reproduce_stage2_and_stage3(tmp_path):
    """Two runs of one config and seed on CPU give identical Stage II and III metrics (scores and losses)."""
    for name in ("a", "b"):
        run_experiment(mosi(tmp_path, name))
    for stage in ("stage2_text", "stage2_audio", "stage3"):
        a, b = (json.loads((tmp_path / "runs" / n / stage / "seed-0" / "metrics.json").read_text()) for n in "ab")
        assert a["test"] == b["test"] and a["validation"] == b["validation"], stage
        assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]], stage


def test_seeds_in_parallel_processes_merge_in_the_report(tmp_path, tiny_encoder):
    """`merits train CONFIG --seed k` in two processes at once: each trains its seed, and `merits report` gives the
    mean over both."""
    overrides = ["data.max_conversations=3", "data.options.strict_counts=false", "stage1_text.epochs=1",
                 "stage2_text.epochs=1", "seeds=[0, 1]", f"text_encoder.model={tiny_encoder}",
                 f"runs_dir={tmp_path / 'runs'}", "name=par", "threads=1"]
    env = {**os.environ, "MERITS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "merits", "-q", "train", "offline", *overrides, "--seed", str(k)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    md = report_run(tmp_path / "runs" / "par")
    assert "mean ± std over seeds [0, 1]" in md
    summary = json.loads((tmp_path / "runs" / "par" / "results.json").read_text())["summary"]
    assert summary["stage2_text"]["weighted_f1"]["n"] == 2 and summary["stage1_text"]["seeds"] == [0, 1]
    assert main(["-q", "train", "offline", *overrides, "--seed", "5"]) == 2  # not one of the config's seeds


def test_a_second_process_waits_for_the_stage_lock(tmp_path, caplog):
    """While one holder computes a stage, another waits (told who holds it) and then finds it done: computed once."""
    path, calls = tmp_path / "stage" / "seed-0", []

    def compute(out):
        calls.append(1)
        time.sleep(0.5)
        (out / "x.txt").write_text("x")
        return {"value": 1}

    holder = threading.Thread(target=run_cached, args=(path, "k", compute))
    holder.start()
    time.sleep(0.1)
    with caplog.at_level("WARNING", logger="merits"):
        assert run_cached(path, "k", compute)["value"] == 1
    holder.join()
    assert len(calls) == 1 and "is being worked on by process" in caplog.text


def test_a_finished_stage_missing_an_output_is_recomputed(tmp_path):
    path, calls = tmp_path / "stage" / "seed-0", []

    def compute(out):
        calls.append(1)
        (out / "embeddings.safetensors").write_text("e" * 10)
        return {}

    run_cached(path, "k", compute)
    run_cached(path, "k", compute)
    assert len(calls) == 1
    (path / "embeddings.safetensors").unlink()  # e.g. a kill between removing old files and writing new ones
    run_cached(path, "k", compute)
    assert len(calls) == 2 and (path / "embeddings.safetensors").is_file()
    (path / "embeddings.safetensors").write_text("e" * 3)  # truncated
    run_cached(path, "k", compute)
    assert len(calls) == 3
    assert not path.with_name("seed-0.old").exists() and not path.with_name("seed-0.partial").exists()


def test_runs_of_older_versions_say_to_retrain(tmp_path):
    from merits.predict import TrainedRun
    from merits.stages.base import load_stage

    run = tmp_path / "old"
    (run / "manifest").mkdir(parents=True)
    (run / "manifest" / "manifest.json").write_text(json.dumps({"labels": ["a", "b"]}))
    (run / "config.yaml").write_text("name: old\nstage2_text:\n  hidden: 64\n")  # the layout before stage configs nested
    with pytest.raises(ConfigError, match="older one: retrain the run"):
        TrainedRun.open(run)
    graph = build_graph(load_experiment("offline"))
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ConfigError, match="older merits.*retrain the run"):
        load_stage(graph["stage2_text"], tmp_path / "ckpt")


@pytest.mark.parametrize("point", ["stage1_text.trained", "stage1_text.exporting", "stage.computed",
                                   "trainer.epoch_saved"])
def test_a_kill_at_each_point_resumes_to_identical_results(tmp_path, tiny_encoder, point):
    """A run killed at a named point (MERITS_KILL_AT) and rerun gives the metrics of an uninterrupted run; a kill
    after Stage I text saved its model does not train it again; a stage finished before the kill is kept, not
    computed again; a kill after an epoch goes on at the next epoch."""
    overrides = ["data.max_conversations=3", "data.options.strict_counts=false", "stage1_text.epochs=2",
                 "stage2_text.epochs=2", "seeds=[0]", f"text_encoder.model={tiny_encoder}", "threads=1"]
    env = {**os.environ, "MERITS_QUIET": "1", "OMP_NUM_THREADS": "1"}

    def train(name, kill=None):
        e = {**env, **({"MERITS_KILL_AT": kill} if kill else {})}
        return subprocess.run([sys.executable, "-m", "merits", "-q", "train", "offline", *overrides,
                               f"runs_dir={tmp_path / name}", "name=k"], env=e, capture_output=True, text=True,
                              timeout=600)

    assert train("whole").returncode == 0
    assert train("killed", point).returncode == 137
    resumed = subprocess.run([sys.executable, "-m", "merits", "train", "offline", *overrides,
                              f"runs_dir={tmp_path / 'killed'}", "name=k"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if point.startswith("stage1_text"):
        assert "resuming from the trained checkpoint" in resumed.stderr and "Text I epoch 1:" not in resumed.stderr
    if point == "stage.computed":  # Stage I text finished, killed before its rename: kept as it is
        assert "was finished before the process stopped" in resumed.stderr and "Text I epoch 1:" not in resumed.stderr
    if point == "trainer.epoch_saved":  # killed after Stage I's first epoch: epoch 2 only
        assert "Text I: resuming after epoch 1" in resumed.stderr and "Text I epoch 1:" not in resumed.stderr
        assert "Text I epoch 2:" in resumed.stderr
    for stage in ("stage1_text", "stage2_text"):
        a, b = (json.loads((tmp_path / n / "k" / stage / "seed-0" / "metrics.json").read_text()) for n in ("whole", "killed"))
        assert a["test"] == b["test"] and a["validation"] == b["validation"], (point, stage)


def test_two_trains_on_one_experiment_do_not_corrupt_it(tmp_path, tiny_encoder):
    """Two `merits train` on one experiment a moment apart, the second with another Stage I learning rate: the stage
    lock serialises them, so the finished stages hold one config's weights, embeddings and metrics together, and
    replaying the run's checkpoints on its own test split reproduces its recorded test scores."""
    from merits.data.manifest import Manifest
    from merits.predict import TrainedRun, predict_run

    overrides = ["data.max_conversations=3", "data.options.strict_counts=false", "stage1_text.epochs=1",
                 "stage2_text.epochs=2", "seeds=[0]", f"text_encoder.model={tiny_encoder}", "threads=1",
                 f"runs_dir={tmp_path / 'runs'}", "name=both"]
    env = {**os.environ, "MERITS_QUIET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "merits", "train", "offline", *overrides]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    second = subprocess.Popen(cmd + ["stage1_text.lr=1e-3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs[1][1][-2000:]
    run = TrainedRun.open(tmp_path / "runs" / "both")
    manifest = Manifest.load(run.directory / "manifest")
    replay = predict_run(run, manifest.select(manifest.split("test")["utterance_id"]), tmp_path / "p")
    for stage in ("stage1_text", "stage2_text"):
        recorded = json.loads((run.directory / stage / "seed-0" / "metrics.json").read_text())["test"]["weighted_f1"]
        assert replay.summary["scores"][stage]["test"]["weighted_f1"] == pytest.approx(recorded, abs=1e-9), stage


def test_a_run_folder_of_other_data_is_refused_or_replaced(tmp_path, tiny_encoder, capsys):
    """`merits train offline data.corpus=custom ...` without a new name would write into the MELD run's folder: it is
    refused, naming both data sets; overwrite=true replaces it whole (no old stage or seed left beside the new)."""
    base = ["data.options.strict_counts=false", "stage1_text.epochs=1", "stage2_text.epochs=1", "seeds=[0]",
            f"text_encoder.model={tiny_encoder}", f"runs_dir={tmp_path}", "name=same"]
    run_experiment(load_experiment("offline", base + ["data.max_conversations=2"]))
    other = base + ["data.max_conversations=3"]  # other data: another manifest fingerprint
    assert main(["-q", "train", "offline", *other]) == 2
    err = capsys.readouterr().err
    assert "holds a run trained on other data" in err and "overwrite=true" in err and "name=" in err
    (tmp_path / "same" / "stage2_text" / "seed-7").mkdir()  # something of the old run
    run_experiment(load_experiment("offline", other + ["overwrite=true"]))
    assert not (tmp_path / "same" / "stage2_text" / "seed-7").exists()
    run_experiment(load_experiment("offline", other))  # the same data again: reused, as always


def test_partially_labelled_conversations_train_with_unlabelled_context(tmp_path, tiny_encoder):
    """A corpus that labels only the last turn of each conversation (a common dialogue-emotion format): the other
    turns are kept as context for Stage II, never trained on nor scored; `drop` leaves them out; `error` refuses."""
    from merits.data import prepare as prepare_data

    meld = prepare_data("meld").subset(4)
    t = meld.table.copy()
    last = t.groupby("conversation_id")["turn"].transform("max") == t["turn"]
    t.loc[~last, "label"] = ""
    path = tmp_path / "last-turn.csv"
    t[["conversation_id", "turn", "split", "text", "label"]].to_csv(path, index=False)
    base = ["data.corpus=custom", f"data.root={path}", "stage1_text.epochs=1", "stage2_text.epochs=2", "seeds=[0]",
            f"text_encoder.model={tiny_encoder}", f"runs_dir={tmp_path}", "data.options.labels=" + ",".join(meld.labels)]
    result = run_experiment(load_experiment("offline", base + ["name=context"]))
    assert "kept as conversation context" in result["table"]
    m2 = json.loads((tmp_path / "context" / "stage2_text" / "seed-0" / "metrics.json").read_text())
    assert m2["test"]["n"] == int((last & (t["split"] == "test")).sum())  # only the labelled turns are scored
    from merits.runs import load_embeddings

    ids, _ = load_embeddings(tmp_path / "context" / "stage2_text" / "seed-0" / "embeddings.safetensors")
    assert len(ids) == len(t)  # every turn went through Stage II as context
    dropped = run_experiment(load_experiment("offline", base + ["name=drop", "data.unlabelled=drop"]))
    assert "left out" in dropped["table"]
    from merits.errors import DataError

    with pytest.raises(DataError, match="utterances without a label"):
        run_experiment(load_experiment("offline", base + ["name=error", "data.unlabelled=error"]))
