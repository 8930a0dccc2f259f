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
