"""Live use: what the conversation stages give when a turn may not see later turns.

Three ways to get a turn's emotion, on the same Stage I outputs (every run of ``common.BENCH_RUNS``: those of
``meld_text.py`` and ``mosi_hierarchy.py``, with and without ``--base``; every seed of each):
- ``bidirectional``: the paper's Stage II / III, reading the whole conversation (as trained and reported);
- ``online``: the same trained models replayed on the conversation up to each turn (``merits predict --online``);
- ``causal``: Stage II / III trained with ``causal: true`` (one-direction GRU of the same width, attention to
  earlier turns only), same settings otherwise.

Keys: ``<run>_<stage>_wf1_<mode>_mean`` / ``_std`` / ``_values`` (test weighted F1) for stage in stage2_text,
stage2_audio, stage3 (MOSI only for the last two), run in meld, mosi, meld_base, mosi_base, mode in bidirectional, online, causal.

    python benchmarks/causal_context.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from common import BENCH_RUNS, finished_run, write_result

from merits.data.manifest import Manifest
from merits.metrics import mean_std
from merits.predict import predict_run
from merits.pipeline import train_stage

def causal_stages(run, manifest: Manifest, seed: int, out: Path) -> dict[str, float]:
    """Stage II (each modality) and Stage III retrained with causal=True on the run's Stage I embeddings."""
    cfg = run.cfg
    causal = {s: replace(getattr(cfg, s), model=replace(getattr(cfg, s).model, causal=True))
              for s in ("stage2_text", "stage2_audio", "stage3")}
    cfg = replace(cfg, **causal)
    scores = {}
    for m in cfg.modalities:
        metrics = train_stage(cfg, f"stage2_{m}", manifest, {f"stage1_{m}": run.directory / f"stage1_{m}" / f"seed-{seed}"},
                              seed, out / f"stage2_{m}")
        scores[f"stage2_{m}"] = metrics["test"]["weighted_f1"]
    if set(cfg.modalities) == {"text", "audio"}:
        metrics = train_stage(cfg, "stage3", manifest, {m: out / m for m in ("stage2_text", "stage2_audio")}, seed,
                              out / "stage3")
        scores["stage3"] = metrics["test"]["weighted_f1"]
    return scores


def main() -> None:
    figures: dict = {}
    for name, (profile, overrides) in BENCH_RUNS.items():
        run = finished_run(profile, overrides)
        manifest = Manifest.load(run.directory / "manifest")
        test = manifest.select(manifest.split("test")["utterance_id"])
        stages = [s for s in ("stage2_text", "stage2_audio", "stage3") if (run.directory / s).is_dir()]
        values: dict[tuple[str, str], list[float]] = {}
        for seed in run.cfg.seeds:
            work = Path(tempfile.mkdtemp(prefix=f"causal-{name}-"))
            online = predict_run(run, test, work / "online", seeds=seed, online=True).summary["scores"]
            causal = causal_stages(run, manifest, seed, work)
            for s in stages:
                trained = json.loads((run.directory / s / f"seed-{seed}" / "metrics.json").read_text())
                values.setdefault((s, "bidirectional"), []).append(trained["test"]["weighted_f1"])
                values.setdefault((s, "online"), []).append(online[s]["test"]["weighted_f1"])
                values.setdefault((s, "causal"), []).append(causal[s])
            shutil.rmtree(work, ignore_errors=True)
        for (s, mode), v in values.items():
            ms = mean_std(v)
            figures.update({f"{name}_{s}_wf1_{mode}_mean": ms["mean"], f"{name}_{s}_wf1_{mode}_std": ms["std"],
                            f"{name}_{s}_wf1_{mode}_values": v})
            print(f"{name} {s} {mode}: {100 * ms['mean']:.2f} ± {100 * ms['std']:.2f}")
        figures[f"{name}_seeds"] = list(run.cfg.seeds)
    write_result("causal_context", figures)


if __name__ == "__main__":
    main()
