"""The label store: one row per (corpus, utterance, teacher, prompt), durable per answer, resumable after a kill,
and joined back onto manifests."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from merits.data.manifest import Manifest
from merits.errors import DataError
from merits.teach import (SENTIMENTS, Answer, LabelStore, VaderTeacher, join_labels, label_manifest,
                          pseudo_labelled_manifest)
from merits.teach.label_store import text_hash
from mock_chat_server import MockChatServer

SRC = Path(__file__).resolve().parents[1] / "src"


def toy(texts, splits=None) -> Manifest:
    n = len(texts)
    splits = splits or ["train"] * n
    table = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(n)], "conversation_id": [f"c{s}" for s in splits],
                          "turn": range(n), "split": splits, "text": texts, "label": ""})
    return Manifest("toy", ("x",), table)


def test_rows_are_keyed_by_corpus_utterance_teacher_and_prompt(tmp_path):
    with LabelStore(tmp_path / "deep" / "labels.sqlite") as store:  # parent folders are created
        store.put("toy", "u0", "t", "p1", "h", Answer("Positive.", "positive", "ok", 0.1, 1))
        store.put("toy", "u0", "t", "p2", "h", Answer("mixed", None, "invalid", 0.2, 1))
        store.put("toy", "u0", "t", "p1", "h", Answer("neutral", "neutral", "ok", 0.3, 2))  # replaces the first
        store.put("other", "u0", "t", "p1", "h", Answer("x", None, "error", 0.0, 3))
        t = store.table("toy")
        assert len(t) == 2 and set(t["prompt_hash"]) == {"p1", "p2"}
        row = store.table("toy", "t", "p1").iloc[0]
        assert (row["raw"], row["label"], row["status"], row["attempts"]) == ("neutral", "neutral", "ok", 2)
        assert row["created_at"].endswith("+00:00")
        assert store.stored("toy", "t", "p1") == {"u0": "h"}
        assert store.stored("other", "t", "p1", include_errors=False) == {}
        s = store.summary().set_index(["corpus", "prompt_hash"])
        assert s.loc[("toy", "p2"), "invalid"] == 1 and s.loc[("other", "p1"), "error"] == 1
        with pytest.raises(DataError, match="several prompts"):
            store.resolve("toy", "t")
        assert store.resolve("toy", "t", "p2") == "p2"
        store.register_prompt("p1", "the prompt")
        assert store.prompt("p1") == "the prompt"
    with LabelStore(tmp_path / "deep" / "labels.sqlite") as again:  # reopened: everything is still there
        assert len(again.table()) == 3


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "labels.sqlite"
    bad.write_text("this is not sqlite " * 100)
    with pytest.raises(DataError, match="not a usable SQLite database"):
        LabelStore(bad)


def test_changed_text_is_asked_again_and_never_the_rest(tmp_path):
    teacher = VaderTeacher()
    store = LabelStore(tmp_path / "labels.sqlite")
    m = toy(["I love it", "I hate it", "A table", ""])
    run = label_manifest(m, teacher, store, show_progress=False)
    assert (run.selected, run.skipped_empty, run.asked, run.counts) == (3, 1, 3, {"ok": 3})
    changed = toy(["I love it", "It is awful", "A table", ""])
    joined = join_labels(changed, store, teacher)
    assert list(joined["teacher_label_status"]) == ["ok", "stale", "ok", "missing"]
    assert list(joined["teacher_label"]) == ["positive", "", "neutral", ""]
    run = label_manifest(changed, teacher, store, show_progress=False)
    assert run.asked == 1 and run.already_stored == 2
    assert store.stored("toy", teacher.name, teacher.prompt_hash)["u1"] == text_hash("It is awful")


def test_pseudo_labelled_manifest(tmp_path):
    teacher = VaderTeacher()
    store = LabelStore(tmp_path / "labels.sqlite")
    m = toy(["I love it", "I hate it", "A table", "Great!", "Awful."], ["train", "train", "train", "test", "test"])
    label_manifest(m, teacher, store, limit=4, show_progress=False)
    store.put("toy", "u2", teacher.name, teacher.prompt_hash, text_hash("A table"), Answer("??", None, "invalid"))
    out = pseudo_labelled_manifest(m, store, teacher)
    assert out.labels == SENTIMENTS
    assert list(out.table["utterance_id"]) == ["u0", "u1", "u3"]
    assert list(out.table["label"]) == ["positive", "negative", "positive"]
    assert out.excluded == {"teacher invalid": 1, "teacher missing": 1}
    assert out.counts()["labels"]["test"] == {"negative": 0, "neutral": 0, "positive": 1}
    assert Manifest.load(out.save(tmp_path / "m")).table.equals(out.table)  # a normal manifest on disk
    with pytest.raises(DataError, match="no labels"):
        pseudo_labelled_manifest(m, store, "nobody")


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {src!r})
    from merits.data.manifest import Manifest
    from merits.teach import ChatTeacher, LabelStore, label_manifest
    teacher = ChatTeacher({url!r}, "mock", api_key_env=None, concurrency=4, timeout_s=5)
    label_manifest(Manifest.load({manifest!r}), teacher, LabelStore({store!r}), show_progress=False)
""")


def test_killed_run_loses_nothing_and_the_rerun_asks_only_for_the_rest(tmp_path):
    texts = [f"{['good', 'bad', 'plain'][i % 3]} utterance {i}" for i in range(60)]
    m = toy(texts)
    m.save(tmp_path / "manifest")
    store_path = tmp_path / "labels.sqlite"
    with MockChatServer(delay_s=0.05) as server:
        script = CHILD.format(src=str(SRC), url=server.url, manifest=str(tmp_path / "manifest"), store=str(store_path))
        child = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ, OMP_NUM_THREADS="1"))
        deadline = time.monotonic() + 60
        while len(server.requests) < 24 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)  # no cleanup, no atexit: whatever was committed is all there is
        child.wait(10)
        before = len(server.requests)
        assert 24 <= before < 60, "the child finished (or never started) before it could be killed"

        store = LabelStore(store_path)
        kept = store.table("toy")
        assert len(kept) >= 16 and (kept["status"] == "ok").all()  # 4 in flight at most were lost
        kept_texts = {texts[int(u[1:])] for u in kept["utterance_id"]}

        from merits.teach import ChatTeacher

        rerun = label_manifest(m, ChatTeacher(server.url, "mock", api_key_env=None, concurrency=4), store,
                               show_progress=False)
        asked_again = [r["text"] for r in server.requests[before:]]
    assert rerun.already_stored == len(kept) and rerun.counts == {"ok": 60}
    prompt = "Given the "
    asked_texts = {t for t in texts if any(f"{prompt}{t}," in a for a in asked_again)}
    assert len(asked_again) == 60 - len(kept)  # exactly the missing ones, each once
    assert asked_texts == set(texts) - kept_texts
