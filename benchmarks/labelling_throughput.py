"""Labelling throughput: labels per second of `merits teach`, end to end (teacher + label store commits).

    python benchmarks/labelling_throughput.py [--utterances 200] [--threads 2]

- Chat teacher against a local OpenAI-compatible server (tests/mock_chat_server.py, its own process) that answers
  every request after a fixed 200 ms, at concurrency 1, 8, 32 and 64. The ideal is concurrency / 0.2 s; the
  target is >= 80 % of it.
- The local SmolLM2-135M-Instruct teacher (packaged GGUF, transformers, greedy, batch 16) and VADER on the first
  N utterances of MELD test (../shared/data/meld), with their answer validity and agreement with MELD's gold
  Sentiment on those utterances.
Each measurement labels into a fresh SQLite store, committing every answer as the real runs do.
Writes benchmarks/results/labelling_throughput.json.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("MERITS_QUIET", "1")
from common import DATA, PROJECT, write_result  # noqa: E402

from merits.data import prepare  # noqa: E402
from merits.data.manifest import Manifest  # noqa: E402
from merits.teach import (ChatTeacher, LabelStore, LocalLMTeacher, VaderTeacher, agreement_table,  # noqa: E402
                          label_manifest)

MELD = DATA / "meld"
MOCK_SERVER = PROJECT / "tests" / "mock_chat_server.py"
DELAY_S = 0.2
CONCURRENCY = (1, 8, 32, 64)


def start_server(delay_s: float) -> tuple[subprocess.Popen, str]:
    # the server is a plain script (stdlib + aiohttp), run as its own process so that it never shares our GIL
    proc = subprocess.Popen([sys.executable, str(MOCK_SERVER), "--port", "0", "--delay", str(delay_s)],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    line = proc.stdout.readline()  # "listening on http://127.0.0.1:PORT/v1"
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"mock server did not start: {line!r}")
    return proc, line.split()[-1]


def measure(manifest: Manifest, teacher, tmp: Path, name: str) -> tuple[float, LabelStore]:
    store = LabelStore(tmp / f"{name}.sqlite")
    run = label_manifest(manifest, teacher, store, show_progress=False)
    assert run.answered == len(manifest.table) and run.stopped is None, run.summary()
    print(run.summary(), flush=True)
    return run.labels_per_s, store


def teacher_quality(manifest: Manifest, store: LabelStore, teacher) -> dict:
    row = agreement_table(manifest, store, teachers=[teacher.name]).rows[0]
    finite = lambda x: None if math.isnan(x) else round(x, 4)  # noqa: E731 - JSON has no NaN (no valid answer)
    return {"valid_answers_pct": 100.0 * row.compared_n / row.reference_n, "overlap_pct": finite(row.overlap),
            "kappa": finite(row.kappa), "confusion": row.confusion}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--utterances", type=int, default=200, help="MELD test utterances for the local teachers")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the local LM (1: two threads lose badly on a shared 2-core machine)")
    args = parser.parse_args()
    figures: dict = {"server_delay_s": DELAY_S}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server, url = start_server(DELAY_S)
        try:
            for c in CONCURRENCY:
                n = 25 if c == 1 else 10 * c  # several rounds of the whole pool, a few seconds each
                texts = [f"benchmark utterance {i} is good" for i in range(n)]
                table = {"utterance_id": [f"u{i}" for i in range(n)], "conversation_id": "c", "turn": range(n),
                         "split": "train", "text": texts, "label": ""}
                manifest = Manifest(f"bench-c{c}", ("x",), pd.DataFrame(table))
                rate, _ = measure(manifest, ChatTeacher(url, "mock", api_key_env=None, concurrency=c, timeout_s=30),
                                  tmp, f"c{c}")
                figures[f"labels_per_s_c{c}"] = round(rate, 2)
                figures[f"fraction_of_ideal_c{c}"] = round(rate / (c / DELAY_S), 3)
                figures[f"utterances_c{c}"] = n
        finally:
            server.terminate()
            server.wait(10)

        meld = prepare("meld", MELD)
        test = meld.table[meld.table["split"] == "test"].head(args.utterances)
        sample = Manifest(meld.corpus, meld.labels, test, meld.source)
        figures["local_utterances"] = len(test)

        vader = VaderTeacher()
        rate, store = measure(sample, vader, tmp, "vader")
        figures["vader_labels_per_s"] = round(rate, 1)
        figures["vader_on_meld_sample"] = teacher_quality(sample, store, vader)

        local = LocalLMTeacher("SmolLM2-135M-Instruct", batch_size=16, max_new_tokens=4, threads=args.threads)
        t0 = time.perf_counter()
        local.load()
        figures["local_smollm2_load_s"] = round(time.perf_counter() - t0, 1)
        rate, store = measure(sample, local, tmp, "local")
        figures["local_smollm2_labels_per_s"] = round(rate, 2)
        figures["local_smollm2_threads"] = args.threads
        figures["local_smollm2_on_meld_sample"] = teacher_quality(sample, store, local)
        answers = store.table(meld.corpus)["raw"].value_counts().head(8)
        figures["local_smollm2_frequent_answers"] = {str(k): int(v) for k, v in answers.items()}
    write_result("labelling_throughput", figures)


if __name__ == "__main__":
    main()
