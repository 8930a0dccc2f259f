"""ASR speed and accuracy of the packaged Whisper models (faster-whisper, int8, CPU): tiny.en, and base.

    python benchmarks/asr_speed.py [--clips 60] [--threads 2] [--batch-size 8]
    python benchmarks/asr_speed.py --model base --language de   # Whisper base (merits[base]), into "models"

Speed: the first N EmoDB clips (2.0 s each, German speech: the English-only tiny.en gives poor text there, so only
the timing is meaningful), transcribed into an empty output directory, without and with the VAD filter.
Real-time factor = decoding wall seconds / audio seconds (lower is faster; model loading and audio decoding are
reported separately). Accuracy: WER of the two espeak-ng sentences of tests/fixtures/asr/both.wav (English).
Writes benchmarks/results/asr_speed.json: tiny.en's figures at the top level (as before), every other model's under
``models[<name>]`` (the file's other entries are kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, RESULTS, peak_rss_mb, write_result  # common also puts tests/ on sys.path (the ASR fixture)

EMODB = DATA / "emodb"


def emodb_manifest(n: int, tmp: Path):
    import pandas as pd

    from merits.data import prepare

    labels = pd.read_csv(EMODB / "labels.csv").head(n)
    stem = labels["file"].str.replace(".wav", "", regex=False)
    pd.DataFrame({"conversation_id": stem, "utterance_id": stem, "turn": 0, "split": "train", "text": "",
                  "label": labels["emotion"], "audio_path": [str(EMODB / "wav" / f) for f in labels["file"]]}
                 ).to_csv(tmp / "m.csv", index=False)
    return prepare("custom", tmp / "m.csv", name="emodb-asr-speed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--language", default="en", help="of the EmoDB clips (German: de, for a multilingual model)")
    args = parser.parse_args()
    os.environ["MERITS_QUIET"] = "1"
    from merits.asr import ASRConfig, Transcriber, transcribe_manifest
    from test_asr import FOX, SUN, manifest as fixture_manifest

    from merits.packaged import packaged

    entry = packaged(args.model, "whisper")
    figures: dict = {"model": f"{args.model} ({entry.package if entry else 'not packaged'}, CTranslate2)",
                     "compute_type": "int8", "threads": args.threads, "batch_size": args.batch_size, "beam_size": 5,
                     "clips": args.clips, "clips_language": args.language}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        m = emodb_manifest(args.clips, tmp)
        for vad in (False, True):
            cfg = ASRConfig(model=args.model, language=args.language, threads=args.threads,
                            batch_size=args.batch_size, vad=vad)
            t0 = time.perf_counter()
            transcriber = Transcriber(cfg)
            load = time.perf_counter() - t0
            t1 = time.perf_counter()
            result = transcribe_manifest(m, tmp / f"out-vad{int(vad)}", cfg, transcriber)
            total = time.perf_counter() - t1
            run = result.report["run"]
            figures["vad" if vad else "no_vad"] = {
                "rtf": run["rtf"], "utterances_per_s": round(args.clips / run["wall_seconds"], 2),
                "audio_seconds": run["audio_seconds"], "decode_wall_seconds": run["wall_seconds"],
                "total_seconds_with_audio_decoding": round(total, 2), "model_load_seconds": round(load, 2),
                "empty_transcripts": result.report["empty"]["count"]}
            print(figures["vad" if vad else "no_vad"])
        fixture = transcribe_manifest(fixture_manifest(), tmp / "fixture",
                                      ASRConfig(model=args.model, language="en", threads=args.threads), None)
    texts = dict(zip(fixture.manifest.table["utterance_id"], fixture.manifest.table["text"]))
    figures["rtf"] = figures["no_vad"]["rtf"]
    figures["utterances_per_s"] = figures["no_vad"]["utterances_per_s"]
    figures["espeak_fixture_wer"] = round(fixture.report["wer_vs_input_text"]["wer"], 4)
    figures["espeak_fixture_transcripts"] = {"reference": [FOX, SUN], "hypothesis": [texts["fox0"], texts["sun0"]]}
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    previous = RESULTS / "asr_speed.json"
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    models = old.get("models", {})
    if args.model == "tiny.en":
        write_result("asr_speed", {**figures, "models": models})
    else:
        models[args.model] = {**figures, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "command": " ".join(["python", "benchmarks/asr_speed.py", *sys.argv[1:]])}
        # the top-level figures (tiny.en) keep the command, date and machine of the run that measured them
        previous.write_text(json.dumps({**old, "models": models}, indent=2))
        print(f"wrote {previous}")


if __name__ == "__main__":
    main()
