"""The GPU check: Stage I text with the offline encoder at fp32 and at bf16, and speech feature extraction, on a GPU
(``benchmarks/results/gpu_check.json``). For anyone with a GPU; run it whenever one is available.

    python benchmarks/gpu_check.py                      # cuda; MELD train split, 1 epoch per precision
    python benchmarks/gpu_check.py --device cpu --train-utterances 256 --out /tmp/gpu_check.json   # the code path on CPU

Figures: utterances/s of Stage I training per precision, peak GPU memory per precision, test weighted F1 per
precision, speech features per second (the packaged Whisper tiny.en encoder, batches of 8) on the device,
and the device's name.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT, write_result  # noqa: E402

SHARED = PROJECT.parent / "shared" / "data"


def stage1(precision: str, device: str, train_utterances: int | None, epochs: int) -> dict:
    from merits.config import TextEncoderConfig
    from merits.data import prepare
    from merits.metrics import weighted_f1
    from merits.stages.text_utterance import Stage1TextConfig, fine_tune
    from merits.training import predict
    from merits.runtime import seed_everything

    meld = prepare("meld")
    if train_utterances:
        t = meld.table
        keep = list(t.loc[t["split"] == "train", "utterance_id"][:train_utterances]) + list(t.loc[t["split"] != "train", "utterance_id"])
        meld = meld.select(keep)
    n_train = int((meld.table["split"] == "train").sum())
    seed_everything(0)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sc = Stage1TextConfig(epochs=epochs, patience=epochs, precision=precision)
    tuned = fine_tune(TextEncoderConfig(), sc, meld, 0, device, f"Stage I text {precision}")
    test = predict(tuned.model, tuned.batches("test"), tuned.trainer.device, "test", precision)
    out = {"train_utterances_per_s": n_train / tuned.result.seconds_per_epoch,
           "seconds_per_epoch": tuned.result.seconds_per_epoch,
           "test_wf1": weighted_f1(test.label_ids, test.predicted),
           "validation_wf1": tuned.result.best_validation_wf1}
    if device.startswith("cuda"):
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def speech(device: str, clips: int) -> dict:
    from merits.audio import load_audio
    from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder

    wavs = sorted((SHARED / "emodb").rglob("*.wav"))[:clips]
    audios = [load_audio(w) for w in wavs]
    seconds = sum(len(a) for a in audios) / 16000
    out = {"clips": len(audios), "audio_seconds": seconds}
    encoders = {"whisper_tiny_en": SpeechEncoderConfig(kind="whisper", model="tiny.en", layers="all", device=device)}
    for name, cfg in encoders.items():
        encoder = build_speech_encoder(cfg)
        encoder.encode_batch(audios[:2], 16000)  # warm-up (kernels, allocator)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(audios), 8):
            encoder.encode_batch(audios[i:i + 8], 16000)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        took = time.perf_counter() - start
        out[name] = {"utterances_per_s": len(audios) / took, "real_time_factor": took / seconds}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--train-utterances", type=int, default=None, help="first N MELD training utterances (default all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--clips", type=int, default=64, help="EmoDB clips for the speech extraction timing")
    parser.add_argument("--out", help="write the JSON here instead of benchmarks/results/gpu_check.json")
    args = parser.parse_args()
    os.environ.setdefault("MERITS_QUIET", "1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA device here (torch.cuda.is_available() is False); use --device cpu to test the code path")
    figures = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
               "stage1_text": {p: stage1(p, args.device, args.train_utterances, args.epochs) for p in ("fp32", "bf16")},
               "speech_extraction": speech(args.device, args.clips)}
    for p in ("fp32", "bf16"):  # the flat keys a reader looks for first
        figures[f"{p}_train_utterances_per_s"] = figures["stage1_text"][p]["train_utterances_per_s"]
        figures[f"{p}_test_wf1"] = figures["stage1_text"][p]["test_wf1"]
        figures[f"{p}_peak_gpu_memory_mb"] = figures["stage1_text"][p].get("peak_gpu_memory_mb")
    if args.out:
        import json

        Path(args.out).write_text(json.dumps(figures, indent=2))
        print(json.dumps(figures, indent=2))
    else:
        write_result("gpu_check", figures)


if __name__ == "__main__":
    main()
