"""Guarantees from the fault probe (issue 25), one test each: what was lost, paid twice or silently wrong before."""

from __future__ import annotations

import json
import os

import pytest

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
