"""The runs layout: ``runs/<experiment>/<stage>/seed-<k>/``, content-hash skipping, embeddings keyed by utterance id.

A stage directory is written under a ``.partial`` name and renamed when complete, with ``done.json`` holding the
content hash of its inputs and config. A stage whose hash matches is skipped, so a killed run resumes at the
first stage it had not finished, and nothing is computed twice.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

log = logging.getLogger("merits")
DONE = "done.json"
EMBEDDINGS = "embeddings.safetensors"


def stage_dir(runs_dir: str | Path, experiment: str, stage: str, seed: int) -> Path:
    return Path(runs_dir) / experiment / stage / f"seed-{seed}"


def is_done(path: Path, key: str) -> bool:
    done = path / DONE
    return done.is_file() and json.loads(done.read_text()).get("key") == key


def run_cached(path: Path, key: str, compute: Callable[[Path], dict]) -> dict:
    """Return the metrics of the stage at ``path``; compute them (into a fresh directory) unless done for ``key``."""
    if is_done(path, key):
        log.info("skip %s (unchanged, key %s)", path, key)
        return json.loads((path / DONE).read_text())["metrics"]
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    metrics = compute(partial)
    # How long the stage took and the process' peak memory so far (Linux: KiB), recorded for benchmarks.
    metrics.update(stage_seconds=time.perf_counter() - started,
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (partial / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (partial / DONE).write_text(json.dumps({"key": key, "metrics": metrics}, indent=2))
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    return metrics


def save_embeddings(path: str | Path, utterance_ids, embeddings: np.ndarray, **extra: np.ndarray) -> None:
    """One safetensors file: ``embeddings`` (N, D) float32 (+ extra (N, ...) arrays), ids in its metadata."""
    ids = [str(u) for u in utterance_ids]
    arrays = {"embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)}
    arrays.update({k: np.ascontiguousarray(v) for k, v in extra.items()})
    for name, a in arrays.items():
        if len(a) != len(ids):
            raise ValueError(f"{name} has {len(a)} rows for {len(ids)} utterance ids")
    save_file(arrays, str(path), metadata={"utterance_ids": json.dumps(ids)})


def load_embeddings(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Inverse of :func:`save_embeddings`: (utterance ids, {name: array}) with rows in id order."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        ids = json.loads(f.metadata()["utterance_ids"])
    return ids, load_file(str(path))
