"""A newcomer's first hour: errors that hand over the fix, options where the README writes them."""

from __future__ import annotations

from merits.cli import main


def test_an_empty_csv_is_a_named_error_not_a_traceback(tmp_path, capsys):
    empty = tmp_path / "calls.csv"
    empty.write_text("")
    assert main(["prepare", "custom", "--root", str(empty)]) == 2
    assert "holds no rows (the file is empty: not even a header line)" in capsys.readouterr().err


def test_debug_and_quiet_work_after_the_step_too(tmp_path, capsys):
    import pytest

    empty = tmp_path / "calls.csv"
    empty.write_text("")
    from merits.errors import DataError

    with pytest.raises(DataError):  # --debug: the traceback, wherever it is written
        main(["prepare", "custom", "--root", str(empty), "--debug"])
    with pytest.raises(DataError):
        main(["--debug", "prepare", "custom", "--root", str(empty)])
    assert main(["prepare", "custom", "--root", str(empty), "-q"]) == 2


def test_an_unknown_corpus_name_gets_a_did_you_mean(capsys):
    assert main(["prepare", "costum"]) == 2
    assert "unknown corpus 'costum'; did you mean 'custom'?" in capsys.readouterr().err


def test_predicts_macro_f1_is_over_the_classes_the_input_has(iemocap_run, tmp_path):
    """New data often lacks a class: merits predict's macro F1 leaves it out (not counted as 0) and says so."""
    import json

    import pandas as pd
    from sklearn.metrics import f1_score

    from merits.data.manifest import Manifest

    _, _, root = iemocap_run
    m = Manifest.load(root / "manifest")
    keep = m.table[(m.table["split"] == "test") & (m.table["label"] != "anger")]["utterance_id"]
    path = tmp_path / "no-anger.csv"
    m.select(keep).table.to_csv(path, index=False)
    assert main(["-q", "predict", str(root), str(path), "--out", str(tmp_path / "p"), "--stage", "stage2_text"]) == 0
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    score = summary["scores"]["stage2_text"]["test"]
    assert score["absent_classes"] == ["anger"]
    assert any("no gold example of anger; macro F1 is over the 3 classes present" in n for n in summary["notes"])
    table = pd.read_csv(tmp_path / "p" / "predictions.csv", keep_default_na=False)
    present = ["happiness", "sadness", "neutral"]
    assert score["macro_f1"] == __import__("pytest").approx(
        f1_score(table["label"], table["predicted"], labels=present, average="macro", zero_division=0))


def test_prepare_says_what_train_would_say_later(tmp_path, capsys):
    """Labels that differ only by case, a class with no training example (warnings with their fix), and no
    validation split (an error: merits train would stop) come out of merits prepare already."""
    data = tmp_path / "chat.csv"
    data.write_text("conversation_id,text,label,split\na,hi,Joy,train\na,ho,joy,train\nc,hu,anger,test\nb,he,joy,train\n")
    assert main(["prepare", "custom", "--root", str(data)]) == 2
    err = capsys.readouterr().err
    assert "warning: labels ['Joy', 'joy'] differ only by case or spacing" in err and "-o label_map=joy:Joy" in err
    assert "warning: classes without a training example (the model can never predict them): anger (only in test)" in err
    assert "error: manifest of 'chat' has no 'validation' utterances" in err and "merits train would stop here" in err
    assert main(["prepare", "custom", "--root", str(data), "-o", "validation_fraction=0.5",
                 "-o", "label_map=Joy:joy"]) == 0


def test_serve_logs_no_progress_bar_per_request(iemocap_run, tmp_path, monkeypatch, capfd):
    from merits.serve import ServeConfig
    from merits.serve.service import Conversation, Service, Turn

    _, _, root = iemocap_run
    monkeypatch.delenv("MERITS_QUIET", raising=False)
    service = Service(root, ServeConfig(live_store=str(tmp_path / "live.sqlite"), stage="stage2_text"))
    try:
        capfd.readouterr()
        service.predict([Conversation("c", [Turn("Hello there."), Turn("Go away!")])])
        assert "Text I" not in capfd.readouterr().err  # no tqdm bar of the stages
    finally:
        service.close()
