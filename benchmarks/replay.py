"""Replay equals training (``benchmarks/results/replay.json``): a run trained by ``merits train`` and replayed by
``merits predict``'s Predictor on its own manifest gives, stage by stage, the probabilities its training exported,
in fp32 and in bf16 (every stage's ``precision``; the replay reads it back from stage.json).

    python benchmarks/replay.py [--meld-epochs 1] [--threads 1] [--precisions fp32,bf16]

Runs: MELD on the offline profile (utterance-only Text I and Text II; Stage I limited to ``--meld-epochs`` epochs on
these CPUs: replay fidelity does not depend on how long it trained) and CMU-MOSI on mosi-offline as it ships
(text and audio, stacked Stage I fold ensembles, Stages II and III), seed 0, each in fp32 and in bf16.

Keys: ``replay_fp32_max_abs_diff`` / ``replay_bf16_max_abs_diff`` (the largest difference of any validation or test
utterance's class probability, any stage, both corpora; per split beside it: the training rows of a stacked Stage I
are out-of-fold by design, each from the fold model that never saw it, while a replay reads the fold models' mean,
and the stages after it inherit that difference on training conversations only), per run and stage ``<corpus>_<precision>_<stage>_test_wf1_trained`` and
``_replayed``, ``device_everywhere_checked`` (tests/test_runtime.py's device test, run here: every component on the
device asked for, a second device faked on CPU), and the seconds each part took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import PROJECT, RESULTS, bench_config, write_result

STAGE_PRECISION = ("stage1_text", "stage2_text", "stage1_audio", "stage2_audio", "stage3")


def one(corpus: str, precision: str, meld_epochs: int, threads: int | None, mosi_epochs: int | None = None) -> dict:
    from merits.data.manifest import Manifest
    from merits.pipeline import run_experiment
    from merits.predict import Predictor, TrainedRun
    from merits.runs import load_embeddings

    profile = "offline" if corpus == "meld" else "mosi-offline"
    over = [f"name=bench-replay-{corpus}-{precision}" + (f"-e{mosi_epochs}" if corpus == "mosi" and mosi_epochs else ""),
            "seeds=[0]"]
    over += [f"{s}.precision={precision}" for s in STAGE_PRECISION]
    if corpus == "meld":
        over.append(f"stage1_text.epochs={meld_epochs}")
    elif mosi_epochs:  # bf16 is emulated on CPUs without AVX-512 bf16: each fold model's epochs, limited
        over += [f"stage1_text.epochs={mosi_epochs}", f"stage1_audio.epochs={mosi_epochs}"]
    if threads:
        over.append(f"threads={threads}")
    cfg = bench_config(profile, over)
    start = time.perf_counter()
    run_experiment(cfg)
    trained_s = time.perf_counter() - start
    run = TrainedRun.open(Path(cfg.runs_dir) / cfg.name)
    predictor = Predictor(run, 0, device="cpu")
    manifest = Manifest.load(run.directory / "manifest")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = predictor.predict(manifest, work)
    replay_s = time.perf_counter() - start
    out = {"train_seconds": trained_s, "replay_seconds": replay_s, "stages": {}}
    split_of = dict(zip(manifest.table["utterance_id"], manifest.table["split"]))
    for stage, o in result.stages.items():
        ids, arrays = load_embeddings(run.directory / stage / "seed-0" / "embeddings.safetensors")
        exported = torch.softmax(torch.from_numpy(arrays["logits"]).double(), -1).numpy()
        row = {u: i for i, u in enumerate(o.utterance_ids)}
        gap = np.abs(o.probs[[row[u] for u in ids]] - exported).max(1)
        splits = np.array([split_of[u] for u in ids])
        per_split = {sp: float(gap[splits == sp].max()) for sp in ("train", "validation", "test") if (splits == sp).any()}
        recorded = __import__("json").loads((run.directory / stage / "seed-0" / "metrics.json").read_text())
        out["stages"][stage] = {"max_abs_diff": max(per_split.get("validation", 0.0), per_split.get("test", 0.0)),
                                "max_abs_diff_per_split": per_split,
                                "test_wf1_trained": recorded["test"]["weighted_f1"],
                                "test_wf1_replayed": result.summary["scores"][stage]["test"]["weighted_f1"],
                                "replay_precision": predictor.loaded[0][stage].replay.precision}
        print(f"{corpus} {precision} {stage}: max |p_replay - p_trained| per split {per_split}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meld-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--corpora", default="mosi,meld", help="comma-separated: the runs to train and replay")
    ap.add_argument("--mosi-epochs", type=int, default=None, help="limit CMU-MOSI's Stage I epochs (default: the "
                                                                  "profile's); replay fidelity does not depend on it")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated: the precisions to train and replay")
    a = ap.parse_args()
    asked = a.precisions.split(",")
    figures: dict = {"meld_stage1_epochs": a.meld_epochs, "runs": {}}
    if a.mosi_epochs:
        figures[f"mosi_stage1_epochs_{'_'.join(asked)}"] = a.mosi_epochs
    before = RESULTS / "replay.json"
    if before.is_file():  # a run of one precision keeps the other's figures (bf16 is emulated, slow, on these CPUs)
        old = json.loads(before.read_text())
        if old.get("meld_stage1_epochs") == a.meld_epochs:
            kept = [p for p in old.get("precisions_run", []) if p not in asked]
            figures["runs"] = {k: v for k, v in old["runs"].items() if k.rsplit("_", 1)[1] in kept}
            figures.update({k: v for k, v in old.items() if any(f"_{p}_" in k for p in kept)})
            figures["commands_kept"] = {p: old["command"] for p in kept}
    for precision in asked:
        worst = 0.0
        for corpus in a.corpora.split(","):
            r = figures["runs"][f"{corpus}_{precision}"] = one(corpus, precision, a.meld_epochs, a.threads, a.mosi_epochs)
            for stage, s in r["stages"].items():
                worst = max(worst, s["max_abs_diff"])
                for k in ("test_wf1_trained", "test_wf1_replayed"):
                    figures[f"{corpus}_{precision}_{stage}_{k}"] = s[k]
        figures[f"replay_{precision}_max_abs_diff"] = worst
        figures[f"replay_{precision}_corpora"] = a.corpora.split(",")
    start = time.perf_counter()
    test = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_runtime.py", "-k", "device"],
                          cwd=PROJECT, capture_output=True, text=True)
    figures["device_everywhere_checked"] = test.returncode == 0
    figures["device_check"] = {"test": "tests/test_runtime.py::test_every_component_lands_on_the_device_asked_for",
                               "asked": "cpu:1 (a second device faked on CPU)", "output": test.stdout.strip()[-300:],
                               "seconds": time.perf_counter() - start}
    figures["tolerance"] = 1e-6
    figures["precisions_run"] = sorted({p for k in figures["runs"] for p in [k.rsplit("_", 1)[1]]})
    figures["equal_within_tolerance"] = all(figures[f"replay_{p}_max_abs_diff"] < 1e-6 for p in figures["precisions_run"])
    write_result("replay", figures)


if __name__ == "__main__":
    main()
