"""Does bf16 autocast cost accuracy on CPU, and what does it save? (The MPNet tier fine-tunes Stage I in bf16.)

    python benchmarks/bf16_parity.py [--seeds 0,1,2,3,4] [--steps 12]     # writes results/bf16_parity.json

Two parts, each fp32 against bf16 in one process so that the ratios share the machine's state:

- speed: seconds per training step (batch 32, forward + backward + AdamW, MELD training utterances in the
  length-bucketed order Stage I uses) of all-MiniLM-L6-v2 and all-mpnet-base-v2, fp32 and bf16 steps alternated;
- accuracy: text Stage I and Stage II on CMU-MOSI (the mosi-offline profile without stacking, MiniLM) for every seed
  in both precisions: test weighted F1 mean ± std, and the per-seed differences. MiniLM, because MPNet in fp32 costs
  about an hour for five seeds on 2 cores; the MPNet runs of meld_text_base.json / mosi_hierarchy_base.json are bf16.

Keys: ``speed[<encoder>]`` (``fp32_seconds_per_step``, ``bf16_seconds_per_step``, ``bf16_speedup``),
``accuracy`` (``<stage>_<precision>`` mean/std/values, ``<stage>_bf16_minus_fp32_points``), ``cpu_bf16`` (what the CPU
offers: avx512_bf16, amx_bf16).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from common import MOSI_TABLE, bench_config, write_result
from merits.data import prepare
from merits.metrics import mean_std
from merits.pipeline import run_experiment
from merits.stages.text_utterance import labelled_rows, text_inputs, utterance_batches

ENCODERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def cpu_bf16() -> dict:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else []
    return {f: f in flags for f in ("avx512_bf16", "amx_bf16")}


def step_times(model: str, steps: int) -> dict:
    """fp32 and bf16 seconds per training step, alternated step by step over the same batches."""
    from merits.encoders.text import TextBatcher, load_tokenizer_and_encoder, pool

    tok, enc = load_tokenizer_and_encoder(model)
    batcher, manifest = TextBatcher(tok, 128), prepare("meld")
    encoded = text_inputs(batcher, manifest, None)
    # Stage I's own training batches (length-bucketed, shuffled), of which steps + 1 are timed
    batches = utterance_batches(batcher, manifest, encoded, labelled_rows(manifest, "train"), 32, np.random.default_rng(0))
    full = [b["inputs"] for b in batches if len(b["labels"]) == 32]  # not a pool's short last batch
    batches = [full[b] for b in np.random.default_rng(1).choice(len(full), steps + 1, replace=False)]
    head = torch.nn.Linear(enc.config.hidden_size, 7)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=1e-5)
    enc.train()
    seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for k, batch in enumerate(batches):
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = head(pool(enc(**batch).last_hidden_state, batch["attention_mask"], "mean"))  # (32, 7)
            torch.nn.functional.cross_entropy(logits.float(), torch.zeros(len(logits), dtype=torch.long)).backward()
            opt.step()
            opt.zero_grad()
            if k:  # the first batch warms both paths up
                seconds[precision].append(time.perf_counter() - start)
    fp32, bf16 = float(np.median(seconds["fp32"])), float(np.median(seconds["bf16"]))
    print(f"{model}: fp32 {fp32:.3f} s/step, bf16 {bf16:.3f} s/step ({fp32 / bf16:.2f}x)", flush=True)
    return {"fp32_seconds_per_step": fp32, "bf16_seconds_per_step": bf16, "bf16_speedup": fp32 / bf16,
            "steps": steps, "batch_size": 32}


def accuracy(seeds: list[int]) -> dict:
    out: dict = {}
    for precision in ("fp32", "bf16"):
        cfg = bench_config("mosi-offline", [f"name=bench-bf16-parity-{precision}", f"seeds={seeds}", "modalities=[text]",
                                            "stacking.folds=0", f"stage1_text.precision={precision}"])
        result = run_experiment(cfg)
        for stage in ("stage1_text", "stage2_text"):
            runs = result["per_seed"][stage]
            out[f"{stage}_{precision}"] = mean_std([runs[s]["test"]["weighted_f1"] for s in seeds])
            out[f"{stage}_{precision}_seconds_per_epoch"] = float(np.median([runs[s]["seconds_per_epoch"] for s in seeds]))
    for stage in ("stage1_text", "stage2_text"):
        diff = np.array(out[f"{stage}_bf16"]["values"]) - np.array(out[f"{stage}_fp32"]["values"])
        out[f"{stage}_bf16_minus_fp32_points"] = 100 * float(diff.mean())
        out[f"{stage}_bf16_minus_fp32_points_per_seed"] = (100 * diff).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    figures = {"cpu_bf16": cpu_bf16(), "speed": {m: step_times(m, args.steps) for m in ENCODERS},
               "accuracy": accuracy(seeds), "accuracy_setting": f"CMU-MOSI text, all-MiniLM-L6-v2, seeds {seeds}",
               "data": str(MOSI_TABLE)}
    write_result("bf16_parity", figures)


if __name__ == "__main__":
    main()
