"""Corpus-scale pseudo-labelling on Ray (merits.teach.corpus): a local Ray with 2 CPUs started by the tests; the
pipeline with each teacher kind, structured outputs and balanced endpoints, the shared budget, a SIGKILLed driver
and a killed worker."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from merits.config import load_config
from merits.data import prepare
from merits.teach import LabelStore
from merits.teach.corpus import CorpusLabelConfig, label_corpus
from mock_chat_server import MockChatServer


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """60 distinct MELD transcripts as a saved manifest (the mock server counts requests per text)."""
    m = prepare("meld").subset(8)
    m = m.select(m.table.drop_duplicates("text")["utterance_id"].head(60))
    assert len(m.table) == 60
    path = tmp_path_factory.mktemp("corpus") / "manifest"
    m.save(path)
    return path


def config(store, manifest, *extra) -> CorpusLabelConfig:
    return load_config(None, [f"store={store}", f"manifest={manifest}", "ray.workers=2", "ray.batch_size=16", *extra],
                       cls=CorpusLabelConfig)


def stored(store) -> pd.DataFrame:
    with LabelStore(store) as s:
        return s.table().set_index("utterance_id").sort_index()


def test_vader_on_ray_stores_what_the_single_process_run_stores(local_ray, texts, tmp_path):
    from merits.teach import TeachConfig, run_teach

    run = label_corpus(config(tmp_path / "ray.sqlite", texts, "teacher=vader", f"export={tmp_path / 'export'}"))
    assert run.answered == run.selected and not run.stopped and run.counts["ok"] == run.selected
    run_teach(load_config(None, [f"store={tmp_path / 'one.sqlite'}", f"manifest={texts}", "teacher=vader"],
                          cls=TeachConfig))
    a, b = stored(tmp_path / "ray.sqlite"), stored(tmp_path / "one.sqlite")
    assert a[["label", "status", "text_hash"]].equals(b[["label", "status", "text_hash"]])
    assert len(prepare("custom", tmp_path / "export").table) == run.selected  # the export for pretraining
    again = label_corpus(config(tmp_path / "ray.sqlite", texts, "teacher=vader"))
    assert again.asked == 0 and again.already_stored == run.selected  # nothing asked twice


def test_chat_on_ray_structured_outputs_balanced_endpoints_global_budget(local_ray, texts, tmp_path):
    with MockChatServer() as one, MockChatServer() as two:
        cfg = config(tmp_path / "chat.sqlite", texts, "teacher=chat", f"chat.base_url={one.url}",
                     f"chat.base_urls=[{two.url}]", "chat.api_key_env=null", "chat.structured=choice",
                     "ray.total_concurrency=8")
        run = label_corpus(cfg)
        assert run.counts.get("ok") == run.selected and run.counts.get("invalid", 0) == 0  # every answer parses
        requests = one.requests + two.requests
        assert len(one.requests) > 5 and len(two.requests) > 5  # both endpoints served
        assert all(r["fields"] == {"structured_outputs": {"choice": ["negative", "neutral", "positive"]}}
                   for r in requests)
        assert max((one.counts + two.counts).values()) == 1  # one request per utterance
    with MockChatServer() as server:  # a budget of 20 requests over both workers
        cfg = config(tmp_path / "budget.sqlite", texts, "teacher=chat", f"chat.base_url={server.url}",
                     "chat.api_key_env=null", "chat.max_requests=20", "chat.structured=guided_choice")
        run = label_corpus(cfg)
        assert len(server.requests) == 20 and run.answered == 20 and "budget" in run.stopped
        assert all(r["fields"] == {"guided_choice": ["negative", "neutral", "positive"]} for r in server.requests)


def test_local_lm_teacher_runs_as_cpu_actors(local_ray, texts, tmp_path):
    run = label_corpus(config(tmp_path / "lm.sqlite", texts, "teacher=local", "limit=4", "ray.batch_size=2",
                              "ray.workers=1"))
    assert run.answered == 4 and run.counts.get("ok", 0) + run.counts.get("invalid", 0) == 4
    # the llama.cpp back-end (the teach-qwen profile's) in actors too: here over SmolLM2's packaged GGUF
    run = label_corpus(config(tmp_path / "llama.sqlite", texts, "teacher=local", "local.decoding=choice",
                              "local.backend=llama_cpp", "local.spellings=lowercase", "limit=4", "ray.batch_size=2",
                              "ray.workers=1"))
    assert run.answered == 4 and run.counts.get("ok", 0) == 4


def _pseudolabel(store, manifest, url, extra=(), env=None):
    return subprocess.Popen([sys.executable, "-m", "merits", "-q", "pseudolabel", "teacher=chat", f"store={store}",
                             f"manifest={manifest}", f"chat.base_url={url}", "chat.api_key_env=null",
                             "ray.workers=2", "ray.batch_size=4", "ray.num_cpus=2", "chat.concurrency=2", *extra],
                            env={**os.environ, "MERITS_QUIET": "1", **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _count(store) -> int:
    if not Path(store).is_file():
        return 0
    with sqlite3.connect(store) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_a_sigkilled_driver_loses_no_label_and_the_rerun_never_asks_for_a_stored_one(texts, tmp_path):
    store = tmp_path / "kill.sqlite"
    with MockChatServer(delay_s=0.15) as server:
        proc = _pseudolabel(store, texts, server.url)
        deadline = time.time() + 240
        while _count(store) < 12 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = stored(store)
        assert 12 <= len(before) < 60
        seen_before = dict(server.counts)
        done = _pseudolabel(store, texts, server.url)
        out, err = done.communicate(timeout=300)
        assert done.returncode == 0, err[-2000:]
        after = stored(store)
        assert len(after) == 60 and after.loc[before.index, "raw"].equals(before["raw"])  # nothing lost or redone
        texts_by_id = prepare("custom", texts).table.set_index("utterance_id")["text"]

        def asked(counts, u):  # the server sees the prompt with the transcript inside it
            return sum(n for message, n in counts.items() if texts_by_id[u] in message)

        for u in before.index:  # a label stored before the kill was never asked for again
            assert asked(server.counts, u) == asked(seen_before, u) == 1, u
        assert max(server.counts.values()) <= 2  # at most the requests in flight at the kill were sent again
        assert sum(server.counts.values()) - 60 <= 2 * 4 * 2  # ... at most workers x batch x concurrency


def test_a_killed_worker_is_retried_by_ray_and_gives_the_same_store(texts, tmp_path):
    with MockChatServer() as server:
        killed = _pseudolabel(tmp_path / "killed.sqlite", texts, server.url,
                              env={"MERITS_KILL_ONCE_AT": "pseudolabel.worker_batch",
                                   "MERITS_KILL_ONCE_FILE": str(tmp_path / "killed-once")})
        _, err = killed.communicate(timeout=300)
        assert killed.returncode == 0, err[-2000:]
        assert (tmp_path / "killed-once").is_file()  # a worker did die mid-run
        clean = _pseudolabel(tmp_path / "clean.sqlite", texts, server.url)
        _, err = clean.communicate(timeout=300)
        assert clean.returncode == 0, err[-2000:]
    a, b = stored(tmp_path / "killed.sqlite"), stored(tmp_path / "clean.sqlite")
    assert len(a) == 60 and a[["label", "status", "raw"]].equals(b[["label", "status", "raw"]])
