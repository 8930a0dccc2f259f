"""CMU-MOSI audio benchmark: Stage I and Stage II speech on the 73 precomputed acoustic features (Poria split).

    python benchmarks/mosi_audio.py [key=value overrides of configs/mosi-offline.yaml]

3 seeds; test weighted F1 mean ± std; also the logistic-regression reference on the same features and split.
Writes benchmarks/results/mosi_audio.json.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from common import bench_config, peak_rss_mb, seconds_per_epoch, write_result
from merits.encoders.speech import build_speech_encoder
from merits.features import extract_features
from merits.metrics import mean_std, weighted_f1
from merits.pipeline import build_manifest, run_experiment


def logreg_reference(cfg) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    manifest = build_manifest(cfg)
    store = extract_features(manifest, build_speech_encoder(cfg.speech_encoder), cfg.cache_dir, cfg.audio)
    x = store.get(manifest.table["utterance_id"])[:, 0]
    y, split = manifest.label_ids(), manifest.table["split"].to_numpy()
    train = np.isin(split, ["train", "validation"])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(x[train], y[train])
    return weighted_f1(y[split == "test"], clf.predict(x[split == "test"]))


def main() -> None:
    overrides = ["name=bench-mosi-audio", "modalities=[audio]"] + sys.argv[1:]
    cfg = bench_config("mosi-offline", overrides)
    start = time.perf_counter()
    result = run_experiment(cfg)
    figures = {"seeds": cfg.seeds, "wall_seconds": time.perf_counter() - start}
    for stage in ("stage1_audio", "stage2_audio"):
        runs = result["per_seed"][stage]
        s = mean_std([m["test"]["weighted_f1"] for m in runs.values()])
        figures.update({f"{stage}_wf1_mean": s["mean"], f"{stage}_wf1_std": s["std"], f"{stage}_wf1_per_seed": s["values"],
                        f"{stage}_seconds_per_epoch": float(np.mean([seconds_per_epoch(result["dir"], stage, k, m)
                                                                     for k, m in runs.items()]))})
    figures.update(reference_logreg_wf1=logreg_reference(cfg), peak_rss_mb=peak_rss_mb(), overrides=overrides,
                   target="stage2_audio_wf1_mean > stage1_audio_wf1_mean", table=result["table"])
    write_result("mosi_audio", figures)
    print(result["table"])


if __name__ == "__main__":
    main()
