"""Prediction with a trained run (``merits predict``): how fast it is, and that replaying a run on its own test
split reproduces the test score the run reported while training.

Runs, seed 0, each predicting the test split of its own manifest as new data (the gold labels only score it):
- ``meld``: the MELD text run of ``meld_text.py`` (Text I -> Text II, all-MiniLM-L6-v2), 2,610 utterances;
- ``mosi``: the CMU-MOSI run of ``mosi_hierarchy.py`` (text and audio, Stages I -> III; the 73 precomputed acoustic
  features are looked up by utterance id), 752 utterances.
A run that is not finished is trained first (both exist when those benchmarks ran).

Keys per run: ``<run>_utterances_per_s`` (end to end: loading the checkpoints, speech features, every stage),
``<run>_seconds``, ``<run>_utterances``, ``<run>_replay_wf1`` and ``<run>_trained_wf1`` (test weighted F1 of the
final stage, replayed vs as trained), ``<run>_label_agreement`` (share of utterances given the same label),
``<run>_online_wf1`` and ``<run>_online_seconds`` (``online=True``: each turn predicted from the turns up to it).

    python benchmarks/predict_speed.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import BENCH_RUNS, finished_run, peak_rss_mb, write_result

from merits.data.manifest import Manifest
from merits.predict import predict_run

def main() -> None:
    figures: dict = {"seed": 0}
    for name, (profile, overrides) in BENCH_RUNS.items():
        run = finished_run(profile, overrides)
        saved = Manifest.load(run.directory / "manifest")
        test = saved.select(saved.split("test")["utterance_id"])
        out = Path(tempfile.mkdtemp(prefix=f"predict-{name}-"))
        started = time.perf_counter()
        result = predict_run(run, test, out, seeds=0)
        seconds = time.perf_counter() - started
        final = result.summary["stage"]
        trained = pd.read_csv(run.directory / final / "seed-0" / "predictions.csv").set_index("utterance_id")
        replayed = result.table.set_index("utterance_id")["predicted"]
        figures.update({
            f"{name}_stages": result.summary["stages"],
            f"{name}_utterances": len(test.table),
            f"{name}_seconds": round(seconds, 2),
            f"{name}_utterances_per_s": round(len(test.table) / seconds, 1),
            f"{name}_replay_wf1": result.summary["scores"][final]["test"]["weighted_f1"],
            f"{name}_trained_wf1": json.loads((run.directory / final / "seed-0" / "metrics.json").read_text())["test"]["weighted_f1"],
            f"{name}_label_agreement": float((replayed == trained["predicted"].reindex(replayed.index)).mean()),
        })
        # online: each turn from the conversation up to it (what a live system knows), Stages II/III on every prefix
        started = time.perf_counter()
        online = predict_run(run, test, out / "online", seeds=0, online=True)
        figures.update({f"{name}_online_seconds": round(time.perf_counter() - started, 2),
                        f"{name}_online_wf1": online.summary["scores"][final]["test"]["weighted_f1"]})
        print(name, {k: v for k, v in figures.items() if k.startswith(name)})
        shutil.rmtree(out, ignore_errors=True)
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_result("predict_speed", figures)


if __name__ == "__main__":
    main()
