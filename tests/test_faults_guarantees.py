"""Guarantees from the fault probe (issue 25), one test each: what was lost, paid twice or silently wrong before."""

from __future__ import annotations

import os

import pytest

from merits.errors import DataError
from merits.locks import Busy, held


def test_one_store_named_through_a_symlink_is_one_lock(tmp_path):
    """Two `merits teach` runs on one label store, one naming it through a symlink, once sent every request twice:
    the lock was keyed by the path as given. It is keyed by the resolved file."""
    store = tmp_path / "labels.sqlite"
    store.write_bytes(b"")
    (tmp_path / "alias.sqlite").symlink_to(store)
    os.makedirs(tmp_path / "sub")
    with held(store, "label store"):
        for other in (tmp_path / "alias.sqlite", tmp_path / "sub" / ".." / "labels.sqlite"):
            with pytest.raises(Busy, match="in use by process"):
                with held(other, "label store", wait=False):
                    pass


@pytest.mark.parametrize("argv", [
    ["train", "offline", 'name=!!python/object/apply:os.system ["echo hi"]'],
    ["train", "offline", "seeds=[0"],
    ["train", "offline", "threads=-3"],
    ["train", "EXTENDS"],
    ["prepare", "meld", "-o", "labels=[a"],
])
def test_bad_overrides_are_named_errors(argv, tmp_path, capsys):
    """Each of these was a traceback (YAML errors, torch's set_num_threads, a non-string extends): now `error: …`
    naming the key and the fix, exit status 2, and nothing run."""
    from merits.cli import main

    if "EXTENDS" in argv:
        (tmp_path / "p.yaml").write_text("extends: 5\n")
        argv = [a.replace("EXTENDS", str(tmp_path / "p.yaml")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert any(word in err for word in ("override", "threads:", "extends:"))


def test_text_that_a_spreadsheet_would_run_is_escaped(tmp_path):
    """OWASP CSV injection: a transcript beginning with =, +, -, @, tab or CR is written with a leading quote in the
    CSVs people open (predictions.csv, conversations.csv); numbers stay numbers."""
    import pandas as pd

    from merits.spreadsheet import write_csv

    texts = ['=HYPERLINK("http://x")', "+1", "-2 apples", "@SUM(A1)", "\tcell", "\rcell", "fine", "it's -not- a formula"]
    write_csv(pd.DataFrame({"text": texts, "confidence": [-0.5] * len(texts)}), tmp_path / "p.csv")
    back = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert back["text"].tolist()[:6] == ["'" + t for t in texts[:6]] and back["text"].tolist()[6:] == texts[6:]
    assert back["confidence"].tolist() == [-0.5] * len(texts)
    unescaped = sum(str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for v in back["text"])
    assert unescaped == 0


def test_no_command_writes_over_its_input_or_a_trained_run(tmp_path):
    """`merits teach … export=M` with M the input manifest replaced its gold labels by teacher sentiments; `merits
    predict … --out RUN/stage2_text/seed-0` overwrote a stage's predictions. Both are named errors now."""
    from merits.cli import main
    from merits.data import prepare

    manifest = prepare("meld").subset(2)
    src = tmp_path / "m"
    manifest.save(src)
    before = (src / "manifest.csv").read_bytes()
    assert main(["teach", "teach-vader", f"manifest={src}", f"store={tmp_path / 's.sqlite'}", f"export={src}"]) == 2
    assert (src / "manifest.csv").read_bytes() == before
    run = tmp_path / "run"
    (run / "manifest").mkdir(parents=True)
    (run / "manifest" / "manifest.json").write_text("{}")
    (run / "config.yaml").write_text("name: run\n")
    from merits.runs import check_output
    from merits.errors import ConfigError

    with pytest.raises(ConfigError, match="inside the trained run"):
        check_output(run / "stage2_text" / "seed-0", [src])
    with pytest.raises(ConfigError, match="the input .* itself"):
        check_output(src, [src / "manifest.json"])
    check_output(tmp_path / "elsewhere", [src])  # anywhere else is fine


def test_a_run_whose_config_outran_its_models_says_which_stage_is_stale(tmp_path, tiny_encoder, caplog):
    """A kill while retraining Stage II with a new learning rate left config.yaml with the new settings while report
    and predict used the old model, silently. Each finished stage records the hash of its settings; predict refuses
    a stale stage and report names it."""
    import yaml

    from merits.errors import ConfigError
    from merits.experiment import load_experiment
    from merits.pipeline import report_run, run_experiment
    from merits.predict import Predictor, TrainedRun

    cfg = load_experiment("offline", ["data.max_conversations=2", "data.options.strict_counts=false",
                                      f"text_encoder.model={tiny_encoder}", "stage1_text.epochs=1",
                                      "stage2_text.epochs=1", "seeds=[0]", f"runs_dir={tmp_path}", "name=r"])
    run_experiment(cfg)
    Predictor(TrainedRun.open(tmp_path / "r"))  # consistent: fine
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    saved["stage2_text"]["lr"] = 0.5  # what `merits train ... stage2_text.lr=0.5` writes before it retrains
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match="stage2_text/seed-0 trained with other settings"):
        Predictor(TrainedRun.open(tmp_path / "r"))
    Predictor(TrainedRun.open(tmp_path / "r"), stage="stage1_text")  # Stage I is what config.yaml says
    report_run(tmp_path / "r")
    assert "stage2_text/seed-0 trained with other settings" in caplog.text


def test_an_answer_bought_once_is_never_bought_again(tmp_path):
    """Two custom corpora whose files share a stem share a corpus name: B's answers replaced A's rows, and going back
    to A re-bought every label. Answers are also kept by what was asked (teacher, prompt, text): A's come back from
    there, and nothing is asked again."""
    import pandas as pd

    from merits.data.manifest import Manifest
    from merits.teach.base import Answer
    from merits.teach.label_store import LabelStore
    from merits.teach.run import select
    from merits.teach.vader import VaderTeacher

    teacher = VaderTeacher()

    def corpus(word):
        return Manifest("calls", (), pd.DataFrame({
            "utterance_id": [f"calls-{i}" for i in range(5)], "conversation_id": "c", "turn": range(5), "split": "train",
            "text": [f"a {word} day {i}" for i in range(5)], "label": ""})).validate()

    with LabelStore(tmp_path / "s.sqlite") as store:
        for word in ("sunny", "rainy"):  # A, then B under the same corpus name and ids
            sel = select(corpus(word), teacher, store)
            assert len(sel.pending) == 5
            for i in sel.pending:
                store.put("calls", sel.ids[i], teacher.name, teacher.prompt_hash, sel.hashes[i],
                          Answer(raw="positive", label="positive", status="ok", latency_s=0.0, attempts=1))
        again = select(corpus("sunny"), teacher, store)  # back to A
        assert again.pending == []
        assert set(store.table("calls")["text_hash"]) == set(again.hashes)  # A's rows are A's again


def test_two_corpora_of_one_name_are_a_named_error(tmp_path):
    """Two files of one stem (a/calls.csv, b/calls.csv) are two corpora named 'calls': labelling the second into the
    first's store is refused with how to name it; a source that has since gone (moved data) takes the name over."""
    import pandas as pd

    from merits.data.manifest import Manifest
    from merits.teach.label_store import LabelStore
    from merits.teach.run import select
    from merits.teach.vader import VaderTeacher

    def corpus(folder):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "calls.csv").write_text("x")
        return Manifest("calls", (), pd.DataFrame({
            "utterance_id": ["calls-0"], "conversation_id": "c", "turn": [0], "split": "train", "text": ["hi"],
            "label": ""}), str(tmp_path / folder / "calls.csv")).validate()

    a, b = corpus("a"), corpus("b")
    with LabelStore(tmp_path / "s.sqlite") as store:
        select(a, VaderTeacher(), store)
        with pytest.raises(DataError, match=r"corpus name 'calls' already holds the labels of .*a/calls.csv.*"
                                            r"data.options.name=calls_2"):
            select(b, VaderTeacher(), store)
        select(a, VaderTeacher(), store)  # the same data again: fine
        (tmp_path / "a" / "calls.csv").unlink()  # A moved away: B may have the name
        select(b, VaderTeacher(), store)
        assert store._db.execute("SELECT source FROM corpora").fetchall() == [(b.source,)]


def test_a_kill_point_can_name_its_nth_passage():
    """MERITS_KILL_AT=name@N dies the N-th time the process reaches the point (Stage II's epoch checkpoint comes
    after Stage I's in one run)."""
    import subprocess
    import sys

    code = "from merits.faults import kill_point\nkill_point('x'); print('one', flush=True)\nkill_point('x'); print('two')"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MERITS_KILL_AT": "x@2"}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 137 and r.stdout.split() == ["one"]


def test_silent_absurdities_are_named():
    """A corpus with one class scored 100 without a word; a 3e38 feature value zeroed that feature for everyone; a
    turn of zero-width spaces was predicted as if it were text."""
    import numpy as np
    import pandas as pd
    import torch

    from merits.data.manifest import Manifest, blank, is_blank
    from merits.errors import DataError
    from merits.stages.speech_utterance import _check_magnitudes

    table = pd.DataFrame({"utterance_id": ["a", "b", "c"], "conversation_id": ["c1", "c2", "c3"], "turn": 0,
                          "split": ["train", "validation", "test"], "text": ["hi", "\u200b\u200b ", "ok"],
                          "label": ["joy", "joy", "joy"]})
    with pytest.raises(DataError, match="empty text and no audio for utterances: b"):  # zero-width spaces: empty
        Manifest("one", ("joy",), table).validate()
    assert is_blank("\u200b\ufeff ") and not is_blank("hi\u200b") and blank(table["text"]).tolist() == [False, True, False]
    m = Manifest("one", ("joy",), table.assign(text=["hi", "yes", "ok"])).validate()
    assert any("only one class" in p for p in m.label_problems())
    features = torch.zeros(3, 1, 4)
    features[1, 0, 2] = 3e38
    with pytest.raises(DataError, match="beyond 1e.30.*b"):
        _check_magnitudes(features, np.array(["a", "b", "c"]))


@pytest.mark.parametrize("error, words", [
    (OSError(28, "No space left on device"), "No space left"),  # an OSError: merits' own line
    (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on "
                  "device\" })"), "the disk is full"),
    (__import__("sqlite3").DatabaseError("database disk image is malformed"), ".recover"),
    (__import__("pickle").UnpicklingError("Weights only load failed"), "weights_only"),
])
def test_library_failures_are_one_line_with_the_fix(monkeypatch, capsys, error, words):
    """Disk full inside safetensors, a damaged SQLite store, a pickle checkpoint refused by weights_only: each was a
    traceback; now `error: …` with what to do."""
    import merits.cli as cli

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "cmd_report", fail)  # the command fails inside a library
    assert cli.main(["report", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err
