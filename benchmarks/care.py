"""CARE on real audio: pretrain a small CARE (care/offline: a reduced WavLM from random initialisation, MiniLM
semantic targets, openSMILE LLD acoustic targets) on the audio of EmoDB and emodb_valence (labels unused), then
EmoDB leave-one-speaker-out accuracy of Stage I speech on its embeddings against the same architecture untrained.

    python benchmarks/care.py [--steps 300] [--asr-model base] [--seeds 0,1,2]

Transcripts for the semantic target come from Whisper (``merits asr``, German, the packaged multilingual base when
installed, else tiny.en). The pretraining audio includes the evaluation speakers (no labels are used); the paper's
CARE trained for 800k steps on MSP-Podcast. Writes benchmarks/results/care.json: ``semantic_loss_first`` /
``_last``, ``acoustic_loss_first`` / ``_last`` (training losses of the first and last logged steps),
``steps_per_s``, ``emodb_accuracy_care``, ``emodb_accuracy_untrained`` (mean ± std over seeds in ``*_detail``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common import DATA, PROJECT, peak_rss_mb, write_result
from emodb_speech import fold_manifest, HEAD
from merits.care import CareModel
from merits.care.pretrain import CarePretrainConfig, build_model, pretrain
from merits.config import load_config
from merits.data import prepare
from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder
from merits.features import extract_features
from merits.metrics import classification_metrics, mean_std
from merits.stages.speech_utterance import EVAL_BATCH, feature_batches, train_head
from merits.runtime import seed_everything

WORK = PROJECT / "runs" / "bench-care"


def unlabelled_audio(tmp: Path) -> pd.DataFrame:
    emodb = pd.read_csv(DATA / "emodb" / "labels.csv")
    files = [DATA / "emodb" / "wav" / f for f in emodb["file"]] + sorted((DATA / "emodb_valence").glob("*.wav"))
    ids = [f"emodb-{f.stem}" if f.parent.name == "wav" else f"valence-{f.stem}" for f in files]
    table = pd.DataFrame({"conversation_id": ids, "utterance_id": ids, "turn": 0, "split": "train", "text": "",
                          "audio_path": [str(f) for f in files]})
    table.to_csv(tmp / "audio.csv", index=False)
    return prepare("custom", tmp / "audio.csv", name="care-audio")


def transcribed(manifest, asr_model: str, threads: int):
    from merits.asr import ASRConfig, transcribe_manifest

    out = WORK / f"asr-{asr_model}"
    result = transcribe_manifest(manifest, out, ASRConfig(model=asr_model, language="de", threads=threads))
    m = result.manifest
    empty = m.table["text"].str.strip() == ""
    m.table.loc[empty, "text"] = "..."  # Whisper heard no words (a 2 s clip may be cut mid-sentence): a neutral text
    return m, int(empty.sum())


def emodb_accuracy(model_dir: Path, seeds: list[int], tmp: Path) -> dict:
    labels = pd.read_csv(DATA / "emodb" / "labels.csv", dtype={"speaker": str})
    speakers = sorted(labels["speaker"].unique())
    folds = [fold_manifest(labels, s, speakers[(i + 1) % len(speakers)], tmp) for i, s in enumerate(speakers)]
    encoder = build_speech_encoder(SpeechEncoderConfig(kind="care", model=str(model_dir), device="cpu"))
    store = extract_features(folds[0], encoder, WORK / "features")
    accuracy = []
    for seed in seeds:
        y_true, y_pred = [], []
        for i, manifest in enumerate(folds):
            seed_everything(seed)
            ids = manifest.table["utterance_id"].to_numpy()
            features = torch.from_numpy(store.get(ids))
            model, _, trainer, rows = train_head(HEAD, manifest, features, seed, "cpu", f"EmoDB CARE fold {i + 1}")
            pred = trainer.predict(model, feature_batches(features, manifest.label_ids(), ids, rows["test"], EVAL_BATCH))
            y_true += list(pred.label_ids)
            y_pred += list(pred.predicted)
        accuracy.append(classification_metrics(y_true, y_pred, folds[0].labels)["accuracy"])
    return mean_std(accuracy)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--asr-model", default="base")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MERITS_QUIET", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = WORK / "tmp"
    tmp.mkdir(exist_ok=True)
    manifest, no_words = transcribed(unlabelled_audio(tmp), args.asr_model, args.threads)
    cfg = load_config("care/offline", [f"steps={args.steps}", "device=cpu", f"threads={args.threads}"],
                      cls=CarePretrainConfig)
    start = time.perf_counter()
    result = pretrain(manifest, WORK / "pretrained", cfg)
    wall = time.perf_counter() - start
    history = result["history"]
    # the same architecture, untrained (its random initialisation with the same seed), as the reference
    trained = CareModel.load(WORK / "pretrained" / "care")
    torch.manual_seed(cfg.seed)
    untrained = build_model(cfg, trained.config.acoustic_dim, trained.text_config.hidden_size)
    untrained.save(WORK / "untrained")
    care = emodb_accuracy(WORK / "pretrained" / "care", seeds, tmp)
    plain = emodb_accuracy(WORK / "untrained", seeds, tmp)
    write_result("care", {
        "semantic_loss_first": history[0]["semantic"], "semantic_loss_last": history[-1]["semantic"],
        "acoustic_loss_first": history[0]["acoustic"], "acoustic_loss_last": history[-1]["acoustic"],
        "validation_semantic_first": history[0].get("validation_semantic"),
        "validation_semantic_last": history[-1].get("validation_semantic"),
        "steps": args.steps, "steps_per_s": float(np.median([h["steps_per_s"] for h in history])),
        "pretraining_wall_seconds": wall, "history": history,
        "emodb_accuracy_care": care["mean"], "emodb_accuracy_untrained": plain["mean"],
        "emodb_accuracy_care_detail": care, "emodb_accuracy_untrained_detail": plain,
        "pretraining_utterances": result["utterances"], "asr_model": args.asr_model,
        "clips_whisper_heard_no_words": no_words,
        "notes": ["the pretraining audio (EmoDB + emodb_valence, labels unused) includes the evaluation speakers",
                  "the paper's CARE trained for 800k steps on MSP-Podcast; this is a reduced WavLM from random "
                  "initialisation, MiniLM semantic targets and openSMILE eGeMAPSv02 LLD acoustic targets"],
        "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
