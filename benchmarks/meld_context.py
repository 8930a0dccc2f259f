"""Conversation context inside Stage I text on MELD: no context / past only / past + future, each with and without
speaker names, for all-MiniLM-L6-v2 (offline profile) and all-mpnet-base-v2 (offline-base), Text I and Text II.

    python benchmarks/meld_context.py run --encoder minilm --setting past_speakers --seed 0 [--threads 1]
    python benchmarks/meld_context.py queue --encoder minilm --seeds 0,1,2 [--settings a,b] [--worker 0/2] [--threads 1]
    python benchmarks/meld_context.py summary

Each (encoder, setting, seed) is one ``merits train`` run of one seed in this process (its stages cached under
runs/bench-meld-context-<encoder>-<setting>/, so a killed run resumes), recorded when it finishes into
benchmarks/results/meld_context.json under ``runs`` (with how long it took and on what). That file is the resume
across sessions: ``queue`` skips every run it already holds, so the long MPNet settings can be filled in over
several sessions, one seed per process. Every record rewrites the summary keys:

    <encoder>_<setting>_stage{1,2}_text_wf1_mean / _std / _per_seed, ..._validation_wf1_mean,
    <encoder>_<setting>_seconds_per_epoch, _peak_rss_mb, _max_tokens, _mean_tokens
    best_minilm_wf1, best_mpnet_wf1: the test figure of the (setting, stage) with the best mean validation wF1
    (complete settings only: every seed of the encoder's seed list), and the same without speakers

The utterance-only setting ``none`` is the profile as it ships, so its runs are taken from meld_text.json /
meld_text_base.json (the same seeds, config and code path) instead of being trained again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from common import BENCH_RUNS, RESULTS, bench_config, machine, write_result
from merits.metrics import mean_std

NAME = "meld_context"
PAST, FUTURE, MAX_TOKENS = 3, 1, 128  # the window of the context settings (chosen for cost: see docs/results.md)
SETTINGS = {  # name -> stage1_text.context
    "none": {},
    "none_speakers": {"speakers": True},
    "past": {"past": PAST},
    "past_speakers": {"past": PAST, "speakers": True},
    "past_future": {"past": PAST, "future": FUTURE},
    "past_future_speakers": {"past": PAST, "future": FUTURE, "speakers": True},
}
ENCODERS = {"minilm": ("meld", [0, 1, 2]), "mpnet": ("meld_base", [0, 1, 2])}  # -> BENCH_RUNS key, seeds
ORDER = ["past_future_speakers", "past_speakers", "past_future", "past", "none_speakers", "none"]  # queue priority
TARGETS = {"best_minilm_wf1": 0.63, "best_mpnet_wf1": 0.64, "best_mpnet_wf1_aim": 0.653, "paper_text2_wf1": 0.6524}


def overrides_of(encoder: str, setting: str, threads: int | None) -> tuple[str, list[str]]:
    profile, base = BENCH_RUNS[ENCODERS[encoder][0]]
    context = SETTINGS[setting]
    over = [o for o in base if not o.startswith("name=")] + [f"name=bench-meld-context-{encoder}-{setting}"]
    if context:
        over += [f"stage1_text.context.{k}={str(v).lower()}" for k, v in context.items()]
        over += [f"stage1_text.context.max_tokens={MAX_TOKENS}"]
    if threads:
        over.append(f"threads={threads}")
    return profile, over


def train_one(encoder: str, setting: str, seed: int, threads: int | None) -> dict:
    """One seed of one setting, trained (or read from its cache), as a record of ``runs``."""
    import resource

    from merits.pipeline import run_experiment

    profile, over = overrides_of(encoder, setting, threads)
    cfg = bench_config(profile, over)
    start = time.perf_counter()
    result = run_experiment(cfg, seeds=[seed])
    wall = time.perf_counter() - start
    s1, s2 = result["per_seed"]["stage1_text"][seed], result["per_seed"]["stage2_text"][seed]
    return {
        "stage1_text_wf1": s1["test"]["weighted_f1"], "stage2_text_wf1": s2["test"]["weighted_f1"],
        "stage1_text_validation_wf1": s1["validation"]["weighted_f1"],
        "stage2_text_validation_wf1": s2["validation"]["weighted_f1"],
        "stage1_best_epoch": s1["best_epoch"], "seconds_per_epoch": s1["seconds_per_epoch"],
        "stage1_seconds": s1.get("stage_seconds"), "stage2_seconds": s2.get("stage_seconds"),
        "peak_rss_mb": max(s1.get("peak_rss_mb", 0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "max_tokens": s1["input_tokens_max"], "mean_tokens": s1["input_tokens_mean"],  # as Stage I read them
        "context": cfg.stage1_text.context.describe(), "precision": cfg.stage1_text.precision,
        "threads": threads, "wall_seconds_this_call": wall, "run": result["dir"],
        "command": " ".join(["python", "benchmarks/meld_context.py", *sys.argv[1:]]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
    }


def shipped_runs(encoder: str) -> dict[str, dict]:
    """The utterance-only runs of the shipped profile, from meld_text(_base).json: {seed: record}."""
    path = RESULTS / ("meld_text.json" if encoder == "minilm" else "meld_text_base.json")
    if not path.is_file():
        return {}
    d = json.loads(path.read_text())
    out = {}
    for i, seed in enumerate(d["seeds"]):
        out[str(seed)] = {
            "stage1_text_wf1": d["stage1_text_wf1_per_seed"][i], "stage2_text_wf1": d["stage2_text_wf1_per_seed"][i],
            "stage1_text_validation_wf1": d["stage1_text_validation_wf1_per_seed"][i],
            "stage2_text_validation_wf1": d["stage2_text_validation_wf1_per_seed"][i],
            "seconds_per_epoch": d["stage1_seconds_per_epoch_per_seed"][i], "peak_rss_mb": d.get("peak_rss_mb"),
            "max_tokens": 128, "context": "utterance only", "source": f"{path.name} ({d['date']}, {d['command']})",
        }
    return out


def summarise(runs: dict) -> dict:
    """The issue's keys from every recorded run."""
    out: dict = {}
    best: dict = {}
    for encoder, (_, seeds) in ENCODERS.items():
        for setting in SETTINGS:
            recs = runs.get(encoder, {}).get(setting, {})
            if not recs:
                continue
            got = sorted(recs, key=int)
            key = f"{encoder}_{setting}"
            out[f"{key}_seeds"] = [int(s) for s in got]
            for stage in ("stage1", "stage2"):
                test = mean_std([recs[s][f"{stage}_text_wf1"] for s in got])
                val = mean_std([recs[s][f"{stage}_text_validation_wf1"] for s in got])
                out.update({f"{key}_{stage}_text_wf1_mean": test["mean"], f"{key}_{stage}_text_wf1_std": test["std"],
                            f"{key}_{stage}_text_wf1_per_seed": test["values"],
                            f"{key}_{stage}_text_validation_wf1_mean": val["mean"]})
                if len(got) >= len(seeds):  # chosen among complete settings only
                    best.setdefault(encoder, []).append((val["mean"], test["mean"], setting, stage))
            out[f"{key}_seconds_per_epoch"] = float(np.median([recs[s]["seconds_per_epoch"] for s in got]))
            out[f"{key}_peak_rss_mb"] = max(recs[s].get("peak_rss_mb") or 0 for s in got)
            out[f"{key}_max_tokens"] = max(recs[s]["max_tokens"] for s in got)
            if all("mean_tokens" in recs[s] for s in got):
                out[f"{key}_mean_tokens"] = float(np.mean([recs[s]["mean_tokens"] for s in got]))
            if "none" in runs.get(encoder, {}) and setting != "none":
                none = runs[encoder]["none"]
                out[f"{key}_seconds_per_epoch_vs_none"] = out[f"{key}_seconds_per_epoch"] / float(
                    np.median([r["seconds_per_epoch"] for r in none.values()]))
        for tag, allowed in (("", lambda s: True), ("_without_speakers", lambda s: "speakers" not in s)):
            cands = [c for c in best.get(encoder, []) if allowed(c[2])]
            if cands:
                val, test, setting, stage = max(cands)
                out[f"best_{encoder}_wf1{tag}"] = test
                out[f"best_{encoder}{tag}_choice"] = {"setting": setting, "stage": stage, "validation_wf1_mean": val}
    for encoder in ENCODERS:
        if f"{encoder}_none_stage1_text_wf1_mean" in out:
            for setting in SETTINGS:
                for stage in ("stage1", "stage2"):
                    k = f"{encoder}_{setting}_{stage}_text_wf1_mean"
                    if setting != "none" and k in out:
                        out[f"{encoder}_{setting}_{stage}_minus_none_points"] = 100 * (
                            out[k] - out[f"{encoder}_none_{stage}_text_wf1_mean"])
            for setting in SETTINGS:
                if f"{encoder}_{setting}_stage2_text_wf1_mean" in out:
                    out[f"{encoder}_{setting}_stage2_minus_stage1_points"] = 100 * (
                        out[f"{encoder}_{setting}_stage2_text_wf1_mean"] - out[f"{encoder}_{setting}_stage1_text_wf1_mean"])
    return out


def record(encoder: str, setting: str, seed: int, rec: dict | None) -> dict:
    """Add one run (or nothing) to the JSON and rewrite its summary keys, under a lock (two workers at once)."""
    path = RESULTS / f"{NAME}.json"
    with FileLock(f"{path}.lock"):
        old = json.loads(path.read_text()) if path.is_file() else {}
        runs = old.get("runs", {})
        for enc in ENCODERS:  # the shipped utterance-only runs
            shipped = shipped_runs(enc)
            if shipped:
                runs.setdefault(enc, {})["none"] = shipped
        if rec is not None:
            runs.setdefault(encoder, {}).setdefault(setting, {})[str(seed)] = rec
        figures = {**summarise(runs), "targets": TARGETS,
                   "window": {"past": PAST, "future": FUTURE, "max_tokens": MAX_TOKENS},
                   "settings": SETTINGS, "encoders": {e: BENCH_RUNS[k][0] for e, (k, _) in ENCODERS.items()},
                   "runs": runs}
        write_result(NAME, figures)
        return figures


def done(encoder: str, setting: str, seed: int) -> bool:
    path = RESULTS / f"{NAME}.json"
    if setting == "none":
        return True  # from meld_text(_base).json
    runs = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    return str(seed) in runs.get(encoder, {}).get(setting, {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["run", "queue", "summary"])
    ap.add_argument("--encoder", choices=list(ENCODERS), default="minilm")
    ap.add_argument("--setting", choices=list(SETTINGS))
    ap.add_argument("--settings", help="comma-separated, default: every setting in priority order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="comma-separated, default: the encoder's seeds")
    ap.add_argument("--worker", default="0/1", help="i/n: this process takes every n-th run of the queue from i")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.what == "summary":
        record(a.encoder, "", 0, None)
        return
    if a.what == "run":
        if not a.setting:
            ap.error("run needs --setting")
        record(a.encoder, a.setting, a.seed, train_one(a.encoder, a.setting, a.seed, a.threads))
        return
    settings = a.settings.split(",") if a.settings else ORDER
    seeds = [int(s) for s in a.seeds.split(",")] if a.seeds else ENCODERS[a.encoder][1]
    todo = [(s, seed) for seed in seeds for s in settings if not done(a.encoder, s, seed)]
    i, n = (int(x) for x in a.worker.split("/"))
    for setting, seed in todo[i::n]:
        if done(a.encoder, setting, seed):  # the other worker, or an earlier session, did it meanwhile
            continue
        print(f"== {a.encoder} {setting} seed {seed}", flush=True)
        record(a.encoder, setting, seed, train_one(a.encoder, setting, seed, a.threads))


if __name__ == "__main__":
    main()
