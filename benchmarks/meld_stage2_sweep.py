"""Stage II text settings on MELD, chosen on validation: GRU width x input dropout, on fixed Stage I embeddings.

Stage II trains in seconds on the cached Stage I embeddings of the MELD text run (``meld_text.py``, seeds 0-2), so a
small grid is cheap. The setting with the best mean VALIDATION weighted F1 is the one the offline profile uses;
test scores are reported beside it, never used to choose.

Keys: ``grid`` (per setting: validation / test wF1 mean, std, values), ``selected`` (the setting),
``selected_test_wf1_mean`` / ``_std``, ``stage1_test_wf1_mean`` (the same run's Text I, for reference).

    python benchmarks/meld_stage2_sweep.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from common import BENCH_RUNS, finished_run, write_result

from merits.experiment import load_experiment
from merits.data.manifest import Manifest
from merits.metrics import mean_std
from merits.pipeline import train_stage

GRID = [{"hidden": h, "input_dropout": d} for d in (0.2, 0.5, 0.7) for h in (64, 128)]


def main() -> None:
    run = finished_run(*BENCH_RUNS["meld"])
    manifest = Manifest.load(run.directory / "manifest")
    profile = load_experiment("offline")
    base = profile.stage2_text  # the profile's other Stage II settings (dropout, lr, epochs, ...)
    work = Path(tempfile.mkdtemp(prefix="meld-stage2-"))
    grid = []
    for setting in GRID:
        val, test = [], []
        for seed in run.cfg.seeds:
            out = work / f"{setting['hidden']}-{setting['input_dropout']}-{seed}"
            cfg = replace(profile, device="cpu", stage2_text=replace(base, model=replace(base.model, **setting)))
            m = train_stage(cfg, "stage2_text", manifest, {"stage1_text": run.directory / "stage1_text" / f"seed-{seed}"},
                            seed, out)
            val.append(m["validation"]["weighted_f1"])
            test.append(m["test"]["weighted_f1"])
        grid.append({**setting, "validation": mean_std(val), "test": mean_std(test)})
        print(setting, f"validation {grid[-1]['validation']['mean']:.4f}",
              f"test {grid[-1]['test']['mean']:.4f} ± {grid[-1]['test']['std']:.4f}")
    shutil.rmtree(work, ignore_errors=True)
    best = max(grid, key=lambda g: g["validation"]["mean"])
    stage1 = [json.loads((run.directory / "stage1_text" / f"seed-{s}" / "metrics.json").read_text())["test"]["weighted_f1"]
              for s in run.cfg.seeds]
    write_result("meld_stage2_sweep", {
        "fixed": {**{k: getattr(base, k) for k in ("lr", "epochs", "patience", "batch_size")},
                  **{k: getattr(base.model, k) for k in ("dropout", "heads")}},
        "seeds": list(run.cfg.seeds), "grid": grid,
        "selected": {"hidden": best["hidden"], "input_dropout": best["input_dropout"]},
        "selected_test_wf1_mean": best["test"]["mean"], "selected_test_wf1_std": best["test"]["std"],
        "stage1_test_wf1_mean": mean_std(stage1)["mean"], "stage1_test_wf1_std": mean_std(stage1)["std"],
    })


if __name__ == "__main__":
    main()
