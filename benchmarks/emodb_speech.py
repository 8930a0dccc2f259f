"""EmoDB speech benchmark: Stage I speech, speaker-independent (leave one speaker out, all 10 folds).

    python benchmarks/emodb_speech.py [--encoders egemaps,compare,whisper,whisper_base] [--seeds 0,1,2]

For each held-out speaker: test = that speaker, validation = the next speaker in the list, train = the other
eight. Predictions of all folds are pooled; accuracy, unweighted average recall (UAR) and weighted F1 are
reported per encoder (mean ± std over seeds). Features are extracted once into the feature cache; the EmoDB
clips are fed through the `custom` adapter (one utterance per conversation). Writes
benchmarks/results/emodb_speech.json with `best_accuracy` among others; the rows of encoders not run this time are
kept from the previous file (each row records its date).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import RESULTS, peak_rss_mb, write_result
from merits.data import prepare
from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder
from merits.features import extract_features
from merits.metrics import classification_metrics, mean_std
from merits.models.utterance import SpeechHeadConfig
from merits.stages.speech_utterance import EVAL_BATCH, SpeechHeadTrainConfig, feature_batches, train_head
from merits.runtime import seed_everything

EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "features"
ENCODERS = {
    "egemaps": SpeechEncoderConfig(kind="opensmile", model="eGeMAPSv02"),
    "compare": SpeechEncoderConfig(kind="opensmile", model="ComParE_2016"),
    "whisper": SpeechEncoderConfig(kind="whisper"),                    # tiny.en, packaged
    "whisper_base": SpeechEncoderConfig(kind="whisper", model="base"),  # multilingual base (merits[base])
}
HEAD = SpeechHeadTrainConfig(model=SpeechHeadConfig(hidden=[768, 256], dropout=0.3), epochs=60, batch_size=32, lr=1e-3, weight_decay=1e-4,
                             patience=10)


def fold_manifest(labels: pd.DataFrame, test: str, validation: str, folder: Path):
    split = np.where(labels["speaker"] == test, "test", np.where(labels["speaker"] == validation, "validation", "train"))
    table = pd.DataFrame({"utterance_id": labels["file"].str.replace(".wav", "", regex=False),
                          "conversation_id": labels["file"].str.replace(".wav", "", regex=False), "turn": 0,
                          "split": split, "text": "", "label": labels["emotion"],
                          "audio_path": [str(EMODB / "wav" / f) for f in labels["file"]]})
    path = folder / f"emodb-{test}.csv"
    table.to_csv(path, index=False)
    return prepare("custom", path, labels=sorted(labels["emotion"].unique()), name="emodb")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    os.environ.setdefault("MERITS_QUIET", "1")
    labels = pd.read_csv(EMODB / "labels.csv", dtype={"speaker": str})
    speakers = sorted(labels["speaker"].unique())
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folds = [fold_manifest(labels, s, speakers[(i + 1) % len(speakers)], tmp) for i, s in enumerate(speakers)]
        for name in args.encoders.split(","):
            start = time.perf_counter()
            store = extract_features(folds[0], build_speech_encoder(ENCODERS[name]), CACHE)  # same audio in every fold
            extract_s = time.perf_counter() - start
            per_seed = []
            train_start = time.perf_counter()
            for seed in seeds:
                y_true, y_pred = [], []
                for i, manifest in enumerate(folds):
                    seed_everything(seed)
                    ids = manifest.table["utterance_id"].to_numpy()
                    features = torch.from_numpy(store.get(ids))  # (N, L, D) in manifest order
                    model, _, trainer, rows = train_head(HEAD, manifest, features, seed, "cpu", f"EmoDB {name} fold {i + 1}")
                    pred = trainer.predict(model, feature_batches(features, manifest.label_ids(), ids, rows["test"], EVAL_BATCH))
                    y_true += list(pred.label_ids)
                    y_pred += list(pred.predicted)
                m = classification_metrics(y_true, y_pred, folds[0].labels)
                m["uar"] = float(np.mean([c["recall"] for c in m["per_class"].values()]))
                per_seed.append(m)
                print(f"{name} seed {seed}: accuracy {m['accuracy']:.3f}, UAR {m['uar']:.3f}, wF1 {m['weighted_f1']:.3f}",
                      flush=True)
            results[name] = {
                "accuracy": mean_std([m["accuracy"] for m in per_seed]),
                "uar": mean_std([m["uar"] for m in per_seed]),
                "weighted_f1": mean_std([m["weighted_f1"] for m in per_seed]),
                "feature_shape": [store.num_layers, store.dim],
                "extraction_seconds": extract_s,
                "training_seconds_all_folds_and_seeds": time.perf_counter() - train_start,
                "confusion_seed0": per_seed[0]["confusion"],
                "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
    previous = RESULTS / "emodb_speech.json"
    if previous.is_file():  # rows measured earlier (another encoder, another call) are kept
        results = {**json.loads(previous.read_text()).get("encoders", {}), **results}
    best = max(results, key=lambda k: results[k]["accuracy"]["mean"])
    write_result("emodb_speech", {
        "best_accuracy": results[best]["accuracy"]["mean"], "best_encoder": best,
        "encoders": results, "labels": folds[0].labels, "seeds": seeds,
        "protocol": "leave one speaker out, 10 folds; validation = next speaker; pooled test predictions",
        "reference_egemaps_logreg_accuracy": 0.63, "target_best_accuracy": 0.70, "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
