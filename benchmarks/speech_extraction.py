"""Speech feature extraction speed: utterances per second, real-time factor and peak memory per encoder.

    python benchmarks/speech_extraction.py [--clips 100] [--encoders egemaps,compare,whisper]

Each encoder runs in a fresh subprocess (so peak memory is its own) over the first N EmoDB clips (2.0 s each),
into an empty temporary cache. Real-time factor = processing seconds / audio seconds (lower is faster).
Writes benchmarks/results/speech_extraction.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_result

EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"
WORKER = r'''
import json, os, resource, sys, time
from pathlib import Path
import pandas as pd
os.environ["MERITS_QUIET"] = "1"
from merits.audio import load_audio
from merits.data import prepare
from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder
from merits.features import extract_features
kind, model, n, emodb, tmp = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
labels = pd.read_csv(emodb / "labels.csv").head(n)
stem = labels["file"].str.replace(".wav", "", regex=False)
pd.DataFrame({"conversation_id": stem, "utterance_id": stem, "turn": 0, "split": "train", "text": "",
              "label": labels["emotion"], "audio_path": [str(emodb / "wav" / f) for f in labels["file"]]}).to_csv(tmp / "m.csv", index=False)
manifest = prepare("custom", tmp / "m.csv", name="emodb-speed")
audio_seconds = sum(len(load_audio(p)) / 16000 for p in manifest.table["audio_path"])
t0 = time.perf_counter()
encoder = build_speech_encoder(SpeechEncoderConfig(kind=kind, model=model))
t1 = time.perf_counter()
store = extract_features(manifest, encoder, tmp / "cache")
t2 = time.perf_counter()
print(json.dumps({"utterances": n, "audio_seconds": audio_seconds, "load_seconds": t1 - t0, "extract_seconds": t2 - t1,
                  "utterances_per_second": n / (t2 - t1), "real_time_factor": (t2 - t1) / audio_seconds,
                  "feature_shape": [store.num_layers, store.dim],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''
ENCODERS = {"egemaps": ("opensmile", "eGeMAPSv02"), "compare": ("opensmile", "ComParE_2016"), "whisper": ("whisper", "")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    args = parser.parse_args()
    figures = {}
    for name in args.encoders.split(","):
        kind, model = ENCODERS[name]
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", WORKER, kind, model, str(args.clips), str(EMODB), tmp],
                                 check=True, capture_output=True, text=True)
        figures[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, figures[name], flush=True)
    write_result("speech_extraction", {"encoders": figures, "clips": args.clips,
                                       "clip_source": "EmoDB (22.05 kHz, 2.0 s clips, resampled to 16 kHz)"})


if __name__ == "__main__":
    main()
