"""Corpus-scale pseudo-labelling on Ray Data: ASR (rows with audio but no transcript) -> teacher -> label store ->
export for pretraining, on this machine (a local Ray) or on a cluster (``ray.address``).

    merits pseudolabel CONFIG [key=value ...] [--address ray://head:10001]

The same :class:`TeachConfig` as ``merits teach`` (teacher, store, manifest, prompt, export) plus ``ray`` (workers,
concurrency, batch size) and ``asr`` / ``transcripts`` (Whisper for rows that need a transcript). The single-process
commands (``merits asr``, ``merits teach``) keep working and share the same stores.

Workers (Ray Data ``map_batches`` over actor pools):
- ASR: ``ray.asr_workers`` actors, each holding a Whisper model (one GPU each where the cluster has GPUs);
- teachers: ``ray.workers`` actors, each building the configured teacher once. HTTP teachers keep
  ``ray.total_concurrency // workers`` requests in flight each (a global bound) and draw on one request budget
  shared by all of them (``chat.max_requests``, leased in small blocks from a Ray actor). The local LM and VADER
  run as CPU actors.

Durability, with one writer. The workers never touch the stores: the driver reads their result batches as they
stream back and commits each batch in ONE transaction (``LabelStore.put_many``; transcripts: one fsynced line each).
So a kill of the driver or of a worker at any moment loses no stored label, and a rerun asks only for what is not
stored: never for a stored label. What was in flight when the driver died (at most ``workers`` x ``batch_size``
requests) is asked again. A killed worker's batch is retried by Ray on a restarted actor. Per-worker shards merged
afterwards would let workers write, but leave a kill between write and merge to reconcile; at 64 answers per
transaction one SQLite writer stores tens of thousands of labels per second, far above any teacher's rate.

The API key is read from the environment variable named by ``chat.api_key_env`` inside each worker (a local Ray's
workers inherit the driver's environment; on a cluster, set it on the nodes): it is never put into a task, an
actor's arguments, Ray's runtime environment, a log or a file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from merits.asr import ASRConfig
from merits.data.manifest import Manifest
from merits.errors import ConfigError, DataError
from merits.locks import held
from merits.teach.base import Answer, BudgetExhausted, TeacherError
from merits.teach.label_store import LabelStore, pseudo_labelled_manifest
from merits.teach.registry import build_teacher
from merits.teach.run import LabelRun, TeachConfig, load_manifest, report, select

log = logging.getLogger("merits")
LEASE = 32  # requests a worker takes from the shared budget at a time


@dataclass
class RayConfig:
    """Where and how wide the corpus-scale pipeline runs."""

    address: str | None = None           # a Ray cluster (ray://head:10001, or auto); null = a local Ray here
    num_cpus: int | None = None          # local Ray: CPUs it may use; null = all of this machine's
    workers: int = 2                     # teacher actors
    cpus_per_worker: float = 1.0         # CPUs each teacher actor reserves (HTTP workers need little)
    total_concurrency: int | None = None  # HTTP requests in flight over all workers; null = chat.concurrency each
    batch_size: int = 64                 # texts per task: what a worker labels, and the driver stores, at once
    asr_workers: int = 1                 # Whisper actors (one GPU each where the cluster has GPUs)
    asr_batch_size: int = 16             # utterances per ASR task

    def __post_init__(self) -> None:
        for key in ("workers", "batch_size", "asr_workers", "asr_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"ray.{key} must be >= 1, got {getattr(self, key)}")
        if self.total_concurrency is not None and self.total_concurrency < self.workers:
            raise ConfigError(f"ray.total_concurrency ({self.total_concurrency}) must be at least ray.workers "
                              f"({self.workers})")


@dataclass
class CorpusLabelConfig(TeachConfig):
    """``merits pseudolabel``: a teach config plus where it runs and how rows without a transcript get one."""

    ray: RayConfig = field(default_factory=RayConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)  # for rows with audio and no text
    transcripts: str = "runs/transcripts"    # the ASR store and the transcribed manifest (resumable, as merits asr)


# ---------------------------------------------------------------------------------------------- workers
class SharedBudget:
    """The run's request budget over every worker: ``take()`` spends from a lease of LEASE requests drawn from one
    Ray actor, so workers do not call it per request (the ChatTeacher's budget interface)."""

    def __init__(self, actor):
        self.actor, self.lease = actor, 0

    def take(self) -> None:
        import ray

        if self.lease <= 0:
            self.lease = ray.get(self.actor.lease.remote(LEASE))
            if self.lease <= 0:
                raise BudgetExhausted("request budget exhausted (chat.max_requests, shared by every worker)")
        self.lease -= 1


class _Budget:
    """A Ray actor: the requests left of the run's budget."""

    def __init__(self, total: int):
        self.left = total

    def lease(self, n: int) -> int:
        given = max(0, min(n, self.left))
        self.left -= given
        return given


class TeacherWorker:
    """A Ray Data actor: builds the teacher once, labels each batch of texts; the answers go back to the driver.
    A teacher that cannot go on (dead endpoint, spent budget) returns what it answered plus the reason, instead of
    failing the task (which Ray would retry)."""

    def __init__(self, cfg: TeachConfig, concurrency: int | None, budget):
        if cfg.teacher == "chat" and concurrency:
            cfg = replace(cfg, chat=replace(cfg.chat, concurrency=concurrency))
        if cfg.teacher == "local":  # one model per actor, as many threads as the CPUs it reserves
            cfg = replace(cfg, local=replace(cfg.local, threads=max(1, int(cfg.ray.cpus_per_worker))))
        self.teacher = build_teacher(cfg)
        self.budget = SharedBudget(budget) if budget is not None else None

    def __repr__(self) -> str:  # Ray shows actors' reprs: the teacher's names the key's variable, never the key
        return f"TeacherWorker({self.teacher!r})"

    def __call__(self, batch: dict) -> dict:
        from merits.faults import kill_once

        kill_once("pseudolabel.worker_batch")  # fault injection: a worker dying mid-run (Ray restarts it)
        texts = [str(t) for t in batch["text"]]
        got: dict[int, Answer] = {}
        stop = ""
        try:
            if self.budget is not None:
                self.teacher.label(texts, lambda i, a: got.__setitem__(i, a), budget=self.budget)
            else:
                self.teacher.label(texts, lambda i, a: got.__setitem__(i, a))
        except (BudgetExhausted, TeacherError) as e:
            stop = f"{type(e).__name__}: {e}"
        answers = [got.get(i) for i in range(len(texts))]
        return {"k": batch["k"], "raw": [a.raw or "" if a else "" for a in answers],
                "label": [a.label or "" if a else "" for a in answers],
                "status": [a.status if a else "" for a in answers],
                "latency_s": np.array([a.latency_s if a else 0.0 for a in answers]),
                "attempts": np.array([a.attempts if a else 0 for a in answers]),
                "stop": [stop] * len(texts)}


class ASRWorker:
    """A Ray Data actor holding one Whisper model: transcribes a batch of manifest rows into store records."""

    def __init__(self, cfg: ASRConfig):
        from merits.asr.transcribe import Transcriber

        self.cfg, self.transcriber = cfg, Transcriber(cfg)

    def __call__(self, batch: dict) -> dict:
        from merits.asr.transcribe import transcribe_rows
        from merits.audio import AudioError

        rows = [json.loads(r) for r in batch["row"]]
        try:
            records, seconds, wall = transcribe_rows(rows, self.transcriber, self.cfg)
        except AudioError as e:  # audio.on_error=stop: the driver stops with this message
            return {"record": [""], "stop": [str(e)], "seconds": np.array([0.0]), "wall": np.array([0.0])}
        return {"record": [json.dumps(r, ensure_ascii=False) for r in records], "stop": [""] * len(records),
                "seconds": np.array([seconds / max(len(records), 1)] * len(records)),
                "wall": np.array([wall / max(len(records), 1)] * len(records))}


# ---------------------------------------------------------------------------------------------- the pipeline
def _start_ray(cfg: RayConfig) -> bool:
    """Connect (``address``) or start a local Ray; True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"address": cfg.address} if cfg.address else {"num_cpus": cfg.num_cpus}
    ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # merits draws its own: labels/s, ETA, ...
    return True


def transcribe(manifest: Manifest, cfg: CorpusLabelConfig) -> Manifest:
    """The rows with audio and no text transcribed on ASR actors, stored as they come back in the same resumable
    store as ``merits asr`` (``cfg.transcripts``); rows with text keep it. Returns the manifest with transcripts."""
    import ray

    from merits.asr.transcribe import STORE, Transcriber, TranscriptStore, finish, pending_rows
    from merits.progress import progress

    needs = manifest.table[(manifest.table["audio_path"] != "") & (manifest.table["text"].str.strip() == "")]
    if needs.empty:
        return manifest
    part = manifest.select(needs["utterance_id"])
    transcriber = Transcriber(cfg.asr)  # on the driver: the store's identity (model files and settings)
    store = TranscriptStore(Path(cfg.transcripts) / STORE, transcriber.identity)
    todo, reused = pending_rows(part, store, cfg.asr)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    seconds = wall = 0.0
    bar = progress(None, total=len(todo), desc="asr on ray", unit="utt")
    try:
        if todo:
            rows = [{"row": json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()})}
                    for r in todo]
            ds = ray.data.from_items(rows).map_batches(
                ASRWorker, fn_constructor_kwargs={"cfg": replace(cfg.asr, device="cuda" if gpus else "cpu")},
                batch_size=cfg.ray.asr_batch_size, concurrency=cfg.ray.asr_workers, num_gpus=gpus,
                num_cpus=0 if gpus else 1)  # Ray Data restarts a dead actor and retries its batch (its defaults)
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                stops = [s for s in batch["stop"] if s]
                if stops:
                    raise DataError(f"ASR stopped: {stops[0]} (audio.on_error=skip leaves bad audio out)")
                for record, s, w in zip(batch["record"], batch["seconds"], batch["wall"]):
                    store.append(json.loads(record))  # one fsynced line each, as merits asr writes them
                    seconds, wall = seconds + float(s), wall + float(w)
                bar.update(len(batch["record"]))
    finally:
        bar.close()
        store.close()
    result = finish(part, store, cfg.asr, transcriber, Path(cfg.transcripts),
                    {"transcribed": len(todo), "reused": reused, "audio_seconds": seconds, "wall_seconds": wall})
    text = dict(zip(result.manifest.table["utterance_id"], result.manifest.table["text"]))
    t = manifest.table.copy()
    t["text"] = [text.get(u, x) for u, x in zip(t["utterance_id"], t["text"])]
    return dataclasses.replace(manifest, table=t)


def label_corpus(cfg: CorpusLabelConfig) -> LabelRun:
    """ASR where needed, then every pending transcript labelled by teacher actors, each result batch stored by this
    driver in one transaction; then the export. Resumable at any point (see the module docstring)."""
    import ray

    from merits.progress import progress

    manifest = load_manifest(cfg)
    started = _start_ray(cfg.ray)
    try:
        manifest = transcribe(manifest, cfg)
        teacher = build_teacher(cfg)  # on the driver too: its name and prompt key the store (and a missing key fails now)
        with LabelStore(cfg.store) as store, held(store.path, f"label store {store.path}"):
            sel = select(manifest, teacher, store, cfg.splits or None, cfg.limit, cfg.retry_errors, cfg.retry_refused)
            answered, attempts, invalid, stopped = 0, 0, 0, None
            start = time.perf_counter()
            if sel.pending:
                budget = None
                if cfg.teacher == "chat" and cfg.chat.max_requests:
                    budget = ray.remote(_Budget).options(num_cpus=0).remote(cfg.chat.max_requests)
                per_worker = cfg.ray.total_concurrency // cfg.ray.workers if cfg.ray.total_concurrency else None
                items = [{"k": k, "text": sel.texts[i]} for k, i in enumerate(sel.pending)]
                ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // cfg.ray.batch_size))
                ds = ds.map_batches(TeacherWorker, fn_constructor_kwargs={"cfg": cfg, "concurrency": per_worker,
                                                                          "budget": budget},
                                    batch_size=cfg.ray.batch_size, concurrency=cfg.ray.workers,
                                    num_cpus=cfg.ray.cpus_per_worker)  # dead actors: restarted, batch retried
                bar = progress(None, total=len(sel.pending), unit="label", desc=f"pseudolabel {teacher.name}")
                try:
                    # prefetch_batches=0: an answered batch is written as soon as it arrives, not held in a prefetch
                    # buffer where a killed driver would lose it (and the rerun pay for it again)
                    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                        rows = []
                        for k, raw, label, status, lat, att, stop in zip(
                                batch["k"], batch["raw"], batch["label"], batch["status"], batch["latency_s"],
                                batch["attempts"], batch["stop"]):
                            if stop and not stopped:
                                stopped = str(stop)
                            if not status:
                                continue  # not attempted (the budget ran out, or the teacher stopped)
                            i = sel.pending[int(k)]
                            rows.append((sel.ids[i], sel.hashes[i],
                                         Answer(str(raw), str(label) or None, str(status), float(lat), int(att))))
                            attempts += int(att) - 1
                            invalid += status == "invalid"
                        store.put_many(manifest.corpus, teacher.name, teacher.prompt_hash, rows)  # one transaction
                        answered += len(rows)
                        bar.update(len(batch["k"]))
                        bar.set_postfix(labels_s=f"{answered / max(time.perf_counter() - start, 1e-9):.0f}",
                                        invalid=f"{100 * invalid / max(answered, 1):.1f}%", retries=attempts)
                        if stopped and "TeacherError" in stopped:
                            break  # a dead endpoint: every further batch would fail the same way
                finally:
                    bar.close()
            failed = bool(stopped and "TeacherError" in stopped)
            run = report(manifest, teacher, store, sel, answered, time.perf_counter() - start,
                         stopped.split(": ", 1)[-1] if stopped else None, failed)
            if cfg.export and not failed:
                out = pseudo_labelled_manifest(manifest, store, teacher)
                out.save(cfg.export)
                log.info("pseudo-labelled manifest (%d utterances) written to %s", len(out.table), cfg.export)
            return run
    finally:
        if started:
            ray.shutdown()

