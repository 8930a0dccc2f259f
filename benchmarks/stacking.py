"""Does each stage earn its place? The later stages on plain vs out-of-fold (stacked) Stage I outputs.

    python benchmarks/stacking.py meld [--seeds 0,1,2] [--folds 3]      # writes results/stacking_meld.json
    python benchmarks/stacking.py mosi [--seeds 0,1,2,3,4] [--folds 3]  # writes results/stacking_mosi.json

A fine-tuned Stage I is far better on its own training utterances than on unseen ones, so a Stage II trained on its
training-set outputs learns to trust inputs that do not transfer. Per seed this trains the plain Stage I (the
meld_text.py run; for MOSI, whose profile stacks, a run of its own) and K fold models (``stacking.folds``), then the later stages on three
kinds of Stage I inputs:

- ``plain``: every split from the one Stage I trained on all training data (the paper's hierarchy);
- ``oof_average``: training rows out of fold, validation / test rows the mean of the K fold models
  (``stacking.heldout: average``);
- ``oof_full``: training rows out of fold, validation / test rows from the plain Stage I (what
  ``stacking.heldout: full`` trains: one more Stage I on all training data, with the same data, config and seed);

Stage II reads ``embeddings``, ``logits`` or ``both`` under two input-dropout values each (MELD: one); with both
modalities (MOSI) Stage III then reads the selected Stage IIs (``embeddings`` / ``both``, two input dropouts, with
and without modality dropout); the combined ablation is trained on the same Stage I inputs. Every choice is made on
mean VALIDATION weighted F1, never on test. Every trained stage is cached (run_cached): the script resumes.

Keys: ``stage2`` / ``stage3`` grids (per source, modality, reads, input_dropout: validation and test wF1 mean, std,
values), ``selected`` (per source the chosen settings and their test scores), ``best_source`` (by validation of the
final stage), ``stage1_*_train_wf1_mean`` (how clean each Stage I's training outputs are), and the issue's checks:
MELD ``stage2_minus_stage1_points`` (target >= 0.5); MOSI ``stage3_minus_best_stage2_points`` (target > 0) and
``hierarchical_minus_combined_points`` (target >= 0).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import BENCH_RUNS, bench_config, finished_run, write_result
from merits.config import config_hash
from merits.data.manifest import Manifest
from merits.metrics import mean_std
from merits.pipeline import run_experiment, train_stage
from merits.runs import EMBEDDINGS, load_embeddings, run_cached, save_embeddings

# Stage II input dropout per kind of input (0.7 is the profiles' value on embeddings; on 7 logits it is harsh);
# MELD, where each Stage II takes a minute or two, uses the first value of each only
STAGE2_GRID = {"embeddings": (0.7, 0.5), "logits": (0.0, 0.2), "both": (0.7, 0.5)}
STAGE3_GRID = {"embeddings": (0.5, 0.7), "both": (0.5, 0.7)}
MODALITY_DROPOUT = (0.0, 0.3)  # Stage III: share of training conversations with one stream zeroed
SOURCES = ("plain", "oof_average", "oof_full")


def full_inputs(stacked: Path, plain: Path, manifest: Manifest, out: Path) -> Path:
    """Training rows from the out-of-fold export, validation / test rows from the plain Stage I: one file."""
    if (out / EMBEDDINGS).is_file():
        return out
    ids_o, oof = load_embeddings(stacked / EMBEDDINGS)
    ids_p, full = load_embeddings(plain / EMBEDDINGS)
    row_o, row_p = {u: i for i, u in enumerate(ids_o)}, {u: i for i, u in enumerate(ids_p)}
    split = dict(zip(manifest.table["utterance_id"], manifest.table["split"]))
    ids = [u for u in manifest.table["utterance_id"] if u in row_o]
    pick = [(oof, row_o[u]) if split[u] == "train" else (full, row_p[u]) for u in ids]
    out.mkdir(parents=True, exist_ok=True)
    save_embeddings(out / EMBEDDINGS, ids, np.stack([a["embeddings"][i] for a, i in pick]),
                    logits=np.stack([a["logits"][i] for a, i in pick]).astype(np.float32))
    return out


class Sweep:
    """Later stages trained alone (merits.pipeline.train_stage) on given input directories, cached under ``root``."""

    def __init__(self, base_cfg, manifest: Manifest, root: Path, seeds: list[int]):
        self.base, self.manifest, self.root, self.seeds = replace(base_cfg, device="cpu"), manifest, root, seeds

    def run(self, tag: str, stage: str, section: str, settings, inputs: dict[int, dict[str, Path]],
            base=None) -> dict:
        """``stage`` with config section ``section`` = ``settings`` (on ``base``, default the run's config) for every
        seed: {validation, test, dirs}."""
        cfg = replace(base or self.base, **{section: settings})
        val, test, dirs = [], [], {}
        for seed in self.seeds:
            out = dirs[seed] = self.root / tag / f"seed-{seed}"
            key = config_hash("stacking-sweep", stage, cfg, {k: str(v) for k, v in inputs[seed].items()}, seed)
            m = run_cached(out, key, lambda o, seed=seed: train_stage(cfg, stage, self.manifest, inputs[seed], seed, o))
            val.append(m["validation"]["weighted_f1"])
            test.append(m["test"]["weighted_f1"])
        result = {"validation": mean_std(val), "test": mean_std(test), "dirs": dirs}
        print(f"{tag:44s} validation {result['validation']['mean']:.4f}  test {result['test']['mean']:.4f} ± "
              f"{result['test']['std']:.4f}", flush=True)
        return result


def _plain(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "dirs"}


def stage1_score(run_dir: Path, stage: str, split: str, seeds) -> dict:
    return mean_std([json.loads((run_dir / stage / f"seed-{s}" / "metrics.json").read_text())[split]["weighted_f1"]
                     for s in seeds])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", choices=["meld", "mosi"])
    parser.add_argument("--seeds")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (two benchmarks side by side: 1 each)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    profile, overrides = BENCH_RUNS[args.dataset]
    # the plain hierarchy (Stage I on all training data); a profile that stacks (mosi-offline) has it in its own run
    plain_overrides = [*overrides, "stacking.folds=0"]
    if bench_config(profile, overrides).stacking.folds:
        plain_overrides.append(f"name=bench-{args.dataset}-plain")
    plain = finished_run(profile, plain_overrides)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(plain.cfg.seeds)
    stacked_cfg = bench_config(profile, [*overrides, f"name=bench-{args.dataset}-stacking",
                                         f"stacking.folds={args.folds}", f"threads={args.threads}" if args.threads
                                         else "threads=null"])
    run_experiment(stacked_cfg, seeds)  # the fold models (cached per fold) and the stacked Stage I exports
    stacked = Path(stacked_cfg.runs_dir) / stacked_cfg.name
    manifest = Manifest.load(stacked / "manifest")
    sweep = Sweep(plain.cfg, manifest, Path(stacked_cfg.runs_dir) / f"bench-{args.dataset}-stacking-sweep", seeds)
    modalities = [m for m in ("audio", "text") if m in plain.cfg.modalities]
    stage1 = {m: {"plain": {s: plain.directory / f"stage1_{m}" / f"seed-{s}" for s in seeds},
                  "oof_average": {s: stacked / f"stage1_{m}" / f"seed-{s}" for s in seeds}} for m in modalities}
    for m in modalities:
        stage1[m]["oof_full"] = {s: full_inputs(stage1[m]["oof_average"][s], stage1[m]["plain"][s], manifest,
                                                sweep.root / f"oof_full_inputs_{m}" / f"seed-{s}") for s in seeds}
    figures: dict = {"dataset": args.dataset, "seeds": seeds, "folds": args.folds, "stage2": [], "stage3": [],
                     "selected": {}}
    for m in modalities:
        figures[f"stage1_{m}_wf1_mean"] = stage1_score(plain.directory, f"stage1_{m}", "test", seeds)["mean"]
        figures[f"stage1_{m}_wf1_std"] = stage1_score(plain.directory, f"stage1_{m}", "test", seeds)["std"]
        figures[f"stage1_{m}_oof_average_test_wf1_mean"] = stage1_score(stacked, f"stage1_{m}", "test", seeds)["mean"]
        figures[f"stage1_{m}_plain_train_wf1_mean"] = stage1_score(plain.directory, f"stage1_{m}", "train", seeds)["mean"]
        figures[f"stage1_{m}_oof_train_wf1_mean"] = stage1_score(stacked, f"stage1_{m}", "train", seeds)["mean"]
    for source in SOURCES:
        chosen: dict = {}
        for m in modalities:
            base = getattr(plain.cfg, f"stage2_{m}")
            results = []
            for reads, dropouts in STAGE2_GRID.items():
                for d in dropouts[:1] if args.dataset == "meld" else dropouts:
                    sc = replace(base, reads=reads, model=replace(base.model, input_dropout=d))
                    r = sweep.run(f"{source}-stage2_{m}-{reads}-{d}", f"stage2_{m}", f"stage2_{m}", sc,
                                  {s: {f"stage1_{m}": stage1[m][source][s]} for s in seeds})
                    results.append(({"reads": reads, "input_dropout": d}, r))
                    figures["stage2"].append({"source": source, "modality": m, "reads": reads, "input_dropout": d,
                                              **_plain(r)})
            setting, best = max(results, key=lambda x: x[1]["validation"]["mean"])
            chosen[f"stage2_{m}"] = {**setting, **_plain(best), "dirs": best["dirs"]}
        if len(modalities) == 2:
            base3 = plain.cfg.stage3
            results = []
            inputs = {s: {"stage2_text": chosen["stage2_text"]["dirs"][s],
                          "stage2_audio": chosen["stage2_audio"]["dirs"][s]} for s in seeds}
            for reads, dropouts in STAGE3_GRID.items():
                for d in dropouts:
                    for md in MODALITY_DROPOUT:
                        sc = replace(base3, reads=reads, model=replace(base3.model, input_dropout=d,
                                                                       modality_dropout=md))
                        r = sweep.run(f"{source}-stage3-{reads}-{d}-md{md}", "stage3", "stage3", sc, inputs)
                        setting = {"reads": reads, "input_dropout": d, "modality_dropout": md}
                        results.append((setting, r))
                        figures["stage3"].append({"source": source, **setting, **_plain(r)})
            setting, best = max(results, key=lambda x: x[1]["validation"]["mean"])
            chosen["stage3"] = {**setting, **_plain(best)}
            # the ablation on the same Stage I inputs, with the Stage II reads chosen above
            reads = replace(sweep.base, stage2_text=replace(plain.cfg.stage2_text, reads=chosen["stage2_text"]["reads"]),
                            stage2_audio=replace(plain.cfg.stage2_audio, reads=chosen["stage2_audio"]["reads"]))
            r = sweep.run(f"{source}-combined", "combined", "stage3", plain.cfg.stage3,
                          {s: {"stage1_text": stage1["text"][source][s], "stage1_audio": stage1["audio"][source][s]}
                           for s in seeds}, base=reads)
            chosen["combined"] = _plain(r)
        figures["selected"][source] = {k: {x: y for x, y in v.items() if x != "dirs"} for k, v in chosen.items()}
    final = "stage3" if len(modalities) == 2 else "stage2_text"
    best_source = max(SOURCES, key=lambda s: figures["selected"][s][final]["validation"]["mean"])
    sel = figures["selected"][best_source]
    figures["best_source"] = best_source
    if len(modalities) == 2:
        best2 = max(sel["stage2_text"]["test"]["mean"], sel["stage2_audio"]["test"]["mean"])
        figures["stage3_minus_best_stage2_points"] = 100 * (sel["stage3"]["test"]["mean"] - best2)
        figures["hierarchical_minus_combined_points"] = 100 * (sel["stage3"]["test"]["mean"]
                                                             - sel["combined"]["test"]["mean"])
        figures["targets"] = {"stage3_minus_best_stage2_points": "> 0", "hierarchical_minus_combined_points": ">= 0"}
    else:
        figures["stage2_minus_stage1_points"] = 100 * (sel["stage2_text"]["test"]["mean"]
                                                       - figures["stage1_text_wf1_mean"])
        figures["targets"] = {"stage2_minus_stage1_points": ">= 0.5"}
    figures["wall_seconds_this_call"] = time.perf_counter() - start
    write_result(f"stacking_{args.dataset}", figures)


if __name__ == "__main__":
    main()
