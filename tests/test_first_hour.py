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
