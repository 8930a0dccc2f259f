"""The Trainer on real-hardware settings, measured on this machine's CPU (``benchmarks/results/trainer.json``).

    python benchmarks/trainer.py [--epoch-utterances N]

- ``accumulation_max_abs_diff``: Stage I text (all-MiniLM-L6-v2, dropout off, SGD) on 32 MELD training utterances:
  the weights after one optimiser step over 4 batches of 8 with ``accumulate: 4`` against one batch of 32.
- ``ddp2_vs_single_max_abs_diff``: a Stage II model trained for 3 steps by 2 data-parallel processes (torchrun,
  gloo, Accelerate) against 1 process with the same global batches (the worker of tests/trainer_fixtures.py).
- ``batched_vs_single_speech_max_abs_diff``: HF speech features in padded batches against one by one
  (benchmarks/speech_batching.py: a tiny random WavLM on 16 EmoDB clips of different lengths).
- ``fp32_cpu_stage1_seconds_per_epoch`` / ``bf16_cpu_stage1_seconds_per_epoch``: one Stage I text epoch on MELD
  training (offline encoder, batch 32), with validation wF1 after it, at each precision; median of two runs each,
  interleaved (fp32, bf16, fp32, bf16) in one process.
- ``reproducible``: two runs of the same tiny CMU-MOSI experiment (text + the 73 acoustic features, Stages I-III)
  with the same seed give identical Stage II and III metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT, bench_config, write_result  # noqa: E402

sys.path.insert(0, str(PROJECT / "tests"))


def accumulation_diff() -> float:
    from merits.config import TextEncoderConfig
    from merits.data import prepare
    from merits.encoders.text import TextBatcher
    from merits.models.utterance import TextClassifier, TextClassifierConfig
    from merits.training import Trainer, TrainerConfig

    meld = prepare("meld")
    rows = meld.table[meld.table["split"] == "train"].head(32)
    labels = torch.as_tensor(meld.label_ids()[rows.index.to_numpy()])

    def weights(batch_size: int, accumulate: int):
        torch.manual_seed(0)
        model = TextClassifier(TextClassifierConfig(TextEncoderConfig().model, len(meld.labels), tuple(meld.labels)))
        for m in model.modules():  # dropout off: both runs must see the same network
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model.encoder.config.hidden_dropout_prob = model.encoder.config.attention_probs_dropout_prob = 0.0
        batcher = TextBatcher(model.tokenizer, 128)
        tokens = batcher.tokenize(rows["text"])
        batches = [{"inputs": batcher.pad(tokens[i:i + batch_size]), "labels": labels[i:i + batch_size],
                    "utterance_ids": list(rows["utterance_id"][i:i + batch_size])} for i in range(0, 32, batch_size)]
        trainer = Trainer(TrainerConfig(epochs=1, patience=1, accumulate=accumulate, lr=0.05), "cpu")
        trainer.fit(model, lambda e: batches, lambda: batches[:1], torch.optim.SGD(model.parameters(), lr=0.05))
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    a, b = weights(8, 4), weights(32, 1)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def ddp_diff() -> float:
    from safetensors.torch import load_file
    from trainer_fixtures import conversation_data, global_batches, train_steps

    from merits.training import TrainerConfig

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.safetensors"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MERITS_QUIET": "1"}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29733",
                        str(PROJECT / "tests" / "trainer_fixtures.py"), str(out)], env=env, check=True)
        ddp = load_file(str(out))
    feats, labels, lengths = conversation_data(16, seed=2)
    batches = global_batches(feats, labels, lengths, 4)
    single = train_steps(batches[:3], TrainerConfig(epochs=1, patience=1, lr=1e-2), validation=batches[3:])[0]
    return max((ddp[k] - single[k]).abs().max().item() for k in single)


def stage1_epoch(precision: str, limit: int | None) -> dict:
    from merits.config import TextEncoderConfig
    from merits.data import prepare
    from merits.stages.text_utterance import Stage1TextConfig, fine_tune
    from merits.runtime import seed_everything

    meld = prepare("meld")
    if limit:
        train = meld.table.index[meld.table["split"] == "train"][:limit]
        meld = meld.select(list(meld.table.loc[train, "utterance_id"]) +
                           list(meld.table.loc[meld.table["split"] != "train", "utterance_id"]))
    seed_everything(0)
    sc = Stage1TextConfig(epochs=1, patience=1, precision=precision)
    started = time.perf_counter()
    tuned = fine_tune(TextEncoderConfig(), sc, meld, 0, "cpu", f"Stage I text {precision}")
    return {"seconds_per_epoch": tuned.result.seconds_per_epoch, "validation_wf1": tuned.result.best_validation_wf1,
            "train_utterances": int((meld.table["split"] == "train").sum()),
            "wall_seconds": time.perf_counter() - started}


def reproducible() -> bool:
    from merits.pipeline import run_experiment

    metrics = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in (1, 2):
            cfg = bench_config("mosi-offline", [f"runs_dir={tmp}/{k}", "name=repro", "seeds=[0]", "stage1_text.epochs=1",
                                                "data.max_conversations=12", "stage1_audio.epochs=5", "stage2_text.epochs=5",
                                                "stage2_audio.epochs=5", "stage3.epochs=5"])
            run_experiment(cfg)
            metrics.append({s: json.loads((Path(tmp) / str(k) / "repro" / s / "seed-0" / "metrics.json").read_text())
                            for s in ("stage2_text", "stage2_audio", "stage3")})
    strip = lambda m: {k: v for k, v in m.items() if k not in ("stage_seconds", "peak_rss_mb", "seconds_per_epoch",  # noqa: E731
                                                               "history")}
    same_history = all([h["train_loss"] for h in metrics[0][s]["history"]] == [h["train_loss"] for h in metrics[1][s]["history"]]
                       for s in metrics[0])
    return same_history and all(strip(metrics[0][s]) == strip(metrics[1][s]) for s in metrics[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epoch-utterances", type=int, default=None,
                        help="train on the first N MELD training utterances in the timing (default: all 9,989)")
    args = parser.parse_args()
    os.environ.setdefault("MERITS_QUIET", "1")
    from speech_batching import measure

    figures = {"accumulation_max_abs_diff": accumulation_diff()}
    print("accumulation", figures["accumulation_max_abs_diff"], flush=True)
    figures["ddp2_vs_single_max_abs_diff"] = ddp_diff()
    print("ddp", figures["ddp2_vs_single_max_abs_diff"], flush=True)
    figures["batched_vs_single_speech_max_abs_diff"] = measure("cpu")
    figures["reproducible"] = reproducible()
    print("reproducible", figures["reproducible"], flush=True)
    # interleaved, twice each: the first epoch of a process pays one-time costs, and the machine is shared
    runs = {"fp32": [], "bf16": []}
    for precision in ("fp32", "bf16", "fp32", "bf16"):
        r = stage1_epoch(precision, args.epoch_utterances)
        runs[precision].append(r)
        figures["stage1_train_utterances"] = r["train_utterances"]
        print(precision, r, flush=True)
    for precision, rs in runs.items():
        figures[f"{precision}_cpu_stage1_seconds_per_epoch"] = float(np.median([r["seconds_per_epoch"] for r in rs]))
        figures[f"{precision}_cpu_stage1_seconds_per_epoch_runs"] = [r["seconds_per_epoch"] for r in rs]
        figures[f"{precision}_cpu_stage1_validation_wf1"] = rs[0]["validation_wf1"]
    figures["bf16_vs_fp32_cpu_time_ratio"] = (figures["bf16_cpu_stage1_seconds_per_epoch"]
                                               / figures["fp32_cpu_stage1_seconds_per_epoch"])
    figures["torch_threads"] = torch.get_num_threads()
    figures["notes"] = ("accumulation and DDP compared with SGD (weights linear in the gradient); dropout off; "
                        "DDP: 2 CPU processes, gloo, Accelerate-wrapped DistributedDataParallel")
    write_result("trainer", figures)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
