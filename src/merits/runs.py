"""The runs layout: ``runs/<experiment>/<stage>/seed-<k>/``, content-hash skipping, embeddings keyed by utterance id.

A stage directory is written under a ``.partial`` name and renamed when complete, with ``done.json`` (written last)
holding the content hash of its inputs and config and the size of every output. A stage whose hash matches and whose
outputs are all present is skipped, so a killed run resumes at the first stage it had not finished, and nothing is
computed twice. A per-stage lock keeps two processes (e.g. one per seed) from computing the same stage at once.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file

from merits.errors import damaged, load_safetensors, read_json

from merits.faults import kill_point
from merits.locks import held
from merits.distributed import Distributed, alone
from merits.training.checkpoint import replace_dir

log = logging.getLogger("merits")
DONE = "done.json"
KEY_FILE = ".key"  # in a .partial directory: the key it is being computed for
RESUMED = ".resumed"  # in a .partial directory: this computation continues a killed one
EMBEDDINGS = "embeddings.safetensors"


def stage_dir(runs_dir: str | Path, experiment: str, stage: str, seed: int) -> Path:
    return seed_dir(Path(runs_dir) / experiment, stage, seed)


def seed_dir(run: Path, stage: str, seed: int) -> Path:
    """``<run>/<stage>/seed-<k>``: one seed of one stage of a run directory."""
    return Path(run) / stage / f"seed-{seed}"


def finished_seeds(run: Path, stage: str) -> dict[int, Path]:
    """{seed: its directory} of every finished seed of ``stage`` in ``run`` (those with their done.json), by seed."""
    found = {int(done.parent.name.removeprefix("seed-")): done.parent
             for done in (Path(run) / stage).glob(f"seed-*/{DONE}") if done.parent.name.removeprefix("seed-").isdigit()}
    return dict(sorted(found.items()))


def is_done(path: Path, key: str) -> bool:
    """Finished for ``key``, with every output its done.json lists present at its recorded size."""
    done = path / DONE
    if not done.is_file():
        return False
    record = read_json(done, "delete the stage directory to recompute it")
    if record.get("key") != key:
        return False
    for name, size in record.get("outputs", {}).items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            log.warning("%s is marked done but %s is %s: recomputing it", path, name,
                        "missing" if not f.is_file() else "damaged (size changed)")
            return False
    return True


def _compute(path: Path, key: str, compute: Callable[[Path], dict], dist) -> dict:
    """Compute into ``<path>.partial`` (on every process of a distributed stage; rank 0 prepares and finishes)."""
    partial = path.with_name(path.name + ".partial")
    if dist.is_main:
        # a partial directory of the same key is kept: a stage may resume inside it (Stage I text from its saved
        # checkpoint); one of another key is stale
        if (partial / KEY_FILE).is_file() and (partial / KEY_FILE).read_text() == key:
            log.info("resuming %s in %s: what it had saved is kept (a trained checkpoint, finished folds, the "
                     "training loop's last saved state); the stage says below where it goes on", path, partial)
            (partial / RESUMED).touch()
        else:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            (partial / KEY_FILE).write_text(key)
    dist.barrier()
    started = time.perf_counter()
    metrics = compute(partial)
    dist.barrier()
    if not dist.is_main:
        return metrics
    # How long the stage took and the process' peak memory so far (Linux: KiB), recorded for benchmarks.
    metrics.update(stage_seconds=time.perf_counter() - started,
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (partial / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (partial / KEY_FILE).unlink(missing_ok=True)
    (partial / RESUMED).unlink(missing_ok=True)
    outputs = {str(f.relative_to(partial)): f.stat().st_size for f in sorted(partial.rglob("*")) if f.is_file()}
    # done.json is written last: a directory without it never counts as finished
    (partial / DONE).write_text(json.dumps({"key": key, "metrics": metrics, "outputs": outputs}, indent=2))
    kill_point("stage.computed")
    replace_dir(partial, path)  # atomically: no kill leaves a finished-looking mix
    return metrics


def run_cached(path: Path, key: str, compute: Callable[[Path], dict], distributed: bool = False) -> dict:
    """Return the metrics of the stage at ``path``; compute them (into a fresh directory) unless done for ``key``.

    One process at a time computes a stage (the stage lock). Under several data-parallel processes, a
    ``distributed`` stage is computed by all of them (rank 0 writes); any other stage by rank 0 alone while the
    others wait; every process returns the metrics."""
    dist = Distributed.current()
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = None
    # rank 0's lock, for the whole group; kept in <stage>/.locks/ so that the stage folder lists only seeds
    with held(path.parent / ".locks" / path.name, f"stage {path}") if dist.is_main else nullcontext():
        partial = path.with_name(path.name + ".partial")
        if dist.is_main and not is_done(path, key) and is_done(partial, key):
            # killed after the computation finished (done.json written) but before the rename: promote it, never
            # compute it again
            log.info("%s was finished before the process stopped: kept, not computed again", path)
            replace_dir(partial, path)
        done = dist.gather(is_done(path, key) if dist.is_main else None)[0]
        if done:
            if dist.is_main:
                log.info("skip %s (unchanged, key %s)", path, key)
        elif distributed or dist.world == 1:
            metrics = _compute(path, key, compute, dist)
        elif dist.is_main:
            with alone():  # the other processes wait at the barrier below: no collective may wait for them
                metrics = _compute(path, key, compute, Distributed())
        dist.barrier()
    if done or not dist.is_main:
        return json.loads((path / DONE).read_text())["metrics"]
    return metrics


def check_output(out: str | Path, inputs=(), what: str = "--out") -> None:
    """Refuse to write where writing would destroy something: into an input's own directory, or into a trained run
    (its stage files are results and cache keys: a command writing over them corrupts the run). A named error."""
    from merits.errors import ConfigError

    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        folder = source if source.is_dir() else source.parent if source.suffix.lower() in (".json", ".csv") and (
            source.parent / "manifest.json").is_file() else None
        if target == source or (folder is not None and target == folder):
            raise ConfigError(f"{what} {out} is the input {given} itself; the input must stay untouched: write "
                              "somewhere else")
    for folder in (target, *target.parents):
        if (folder / "config.yaml").is_file() and (folder / "manifest" / "manifest.json").is_file():
            raise ConfigError(f"{what} {out} is inside the trained run {folder}; writing there would replace the "
                              "run's own files: write somewhere else")


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

    try:
        with safe_open(str(path), framework="numpy") as f:
            ids = json.loads(f.metadata()["utterance_ids"])
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: SafetensorError, KeyError, ValueError
        raise damaged(path, e, "retrain the stage that wrote it") from None
    return ids, load_safetensors(path, "numpy")
