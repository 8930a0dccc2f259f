"""The on-disk feature cache of frozen speech encoders: extract once, resume after a kill, memory-map for training.

Why: running a speech encoder over a corpus is the expensive part of the speech branch; Stage I/II training on
the cached ``(N, layers, dim)`` array must take seconds and must never decode audio again.

Layout (one directory per corpus, encoder and content key)::

    <cache_root>/<corpus>/<encoder name>-<key>/
        features.npy        (N, layers, dim) float32, written through np.lib.format.open_memmap
        utterance_ids.json  the N utterance ids, row order of features.npy
        done.npy            (N,) bool: rows already extracted (flushed every few seconds, after the features)
        skipped.csv         utterance_id, split, audio_path, reason: rows left out under on_error=skip
        meta.json           encoder fingerprint, audio config, shape, complete flag, timing

The key hashes the encoder's fingerprint, the audio config and every row's (utterance_id, audio_path, start,
end): changing the manifest's audio or the encoder config gives a new directory, never stale features.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from merits.audio import AudioConfig, AudioError, load_utterance
from merits.data.manifest import Manifest
from merits.encoders.speech import SpeechEncoder
from merits.errors import DamagedFileError, DataError, damaged, read_json

log = logging.getLogger("merits")
CACHE_VERSION = 1
FEATURES, IDS, DONE, SKIPPED, META = "features.npy", "utterance_ids.json", "done.npy", "skipped.csv", "meta.json"
SKIPPED_COLUMNS = ("utterance_id", "split", "audio_path", "reason")
FLUSH_SECONDS = 10.0  # progress is made durable at least this often, so a kill loses at most this much work
AUDIO_COLUMNS = ["utterance_id", "audio_path", "start", "end"]


def cache_key(manifest: Manifest, encoder: SpeechEncoder, audio_cfg: AudioConfig) -> str:
    """12 hex digits over the encoder fingerprint, the audio config and every row's audio (id, path, start, end)."""
    rows = manifest.table[AUDIO_COLUMNS if encoder.needs_audio else ["utterance_id"]]
    payload = {"cache": CACHE_VERSION, "encoder": encoder.fingerprint(), "rows": rows.to_csv(index=False)}
    if encoder.needs_audio:
        payload["audio"] = {"sample_rate": audio_cfg.sample_rate, "min_seconds": audio_cfg.min_seconds}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cache_dir(cache_root: str | Path, corpus: str, encoder: SpeechEncoder, key: str) -> Path:
    return Path(cache_root) / re.sub(r"[^A-Za-z0-9._-]+", "_", corpus) / f"{encoder.name}-{key}"


class FeatureStore:
    """Read-only view of a feature cache: ``array`` is the (N, layers, dim) memmap, rows in ``utterance_ids`` order."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / META).is_file():
            raise DataError(f"{self.directory} is not a feature cache (no {META}); run the feature extraction first")
        self.meta = read_json(self.directory / META)
        self.utterance_ids: list[str] = read_json(self.directory / IDS)
        try:
            self.array = np.load(self.directory / FEATURES, mmap_mode="r")  # (N, layers, dim) float32
            self.done = np.load(self.directory / DONE)                      # (N,) bool
        except (OSError, ValueError, EOFError) as e:  # e.g. a truncated features.npy: shorter than its header says
            raise damaged(self.directory / FEATURES, e) from None
        if list(self.array.shape) != list(self.meta.get("shape", self.array.shape)) or \
                len(self.done) != len(self.utterance_ids) or self.array.shape[0] != len(self.utterance_ids):
            raise DamagedFileError(f"{self.directory}: features {tuple(self.array.shape)}, {len(self.done)} done flags "
                                   f"and {len(self.utterance_ids)} ids do not agree with its meta.json")
        self.skipped: dict[str, str] = {r["utterance_id"]: r["reason"] for r in read_skipped(self.directory)}
        self._row = {u: i for i, u in enumerate(self.utterance_ids)}

    @property
    def num_layers(self) -> int:
        return int(self.array.shape[1])

    @property
    def dim(self) -> int:
        return int(self.array.shape[2])

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    @property
    def available_ids(self) -> list[str]:
        """Ids that have features (every id except those left out)."""
        return [u for u, d in zip(self.utterance_ids, self.done) if d]

    def __len__(self) -> int:
        return len(self.utterance_ids)

    def __contains__(self, utterance_id: str) -> bool:
        i = self._row.get(str(utterance_id))
        return i is not None and bool(self.done[i])

    def get(self, ids) -> np.ndarray:
        """(n, layers, dim) float32 features of ``ids``; DataError naming ids that are unknown or were left out."""
        ids = [str(u) for u in ids]
        unknown = [u for u in ids if u not in self._row]
        if unknown:
            raise DataError(f"feature cache {self.directory} has no utterances {unknown[:5]}"
                            + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""))
        rows = np.array([self._row[u] for u in ids], dtype=np.int64)
        missing = [u for u, r in zip(ids, rows) if not self.done[r]]
        if missing:
            why = "; ".join(f"{u}: {self.skipped.get(u, 'not extracted yet')}" for u in missing[:5])
            raise DataError(f"feature cache {self.directory}: no features for {len(missing)} utterances ({why})")
        return np.asarray(self.array[rows], dtype=np.float32)

    def summary(self) -> str:
        """One line: rows with features, and how many utterances (how many of them test) were left out."""
        n, k = len(self), len(self.skipped)
        if not k:
            return f"{self.meta.get('encoder_name', '')} features of {n} utterances in {self.directory}"
        per_split: dict[str, int] = {}
        for r in read_skipped(self.directory):
            per_split[r["split"]] = per_split.get(r["split"], 0) + 1
        splits = ", ".join(f"{s} {c}" for s, c in sorted(per_split.items()))
        return (f"left out {k} of {n} utterances ({per_split.get('test', 0)} test; by split: {splits}) "
                f"for bad audio; report: {self.directory / SKIPPED}")


def read_skipped(directory: Path) -> list[dict]:
    path = Path(directory) / SKIPPED
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_skipped(directory: Path, skipped: dict[str, dict]) -> None:
    tmp = directory / (SKIPPED + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SKIPPED_COLUMNS)
        w.writeheader()
        w.writerows(skipped.values())
    os.replace(tmp, directory / SKIPPED)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _write_meta(directory: Path, meta: dict) -> None:
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp, directory / META)


def extract_features(manifest: Manifest, encoder: SpeechEncoder, cache_root: str | Path,
                     audio_cfg: AudioConfig | None = None, corpus: str | None = None,
                     batch_size: int | None = None) -> FeatureStore:
    """Features of every manifest utterance, from the cache when present; resumes an interrupted extraction.

    Utterances reach ``encoder.encode_batch`` ``batch_size`` at a time (default: the encoder's own
    ``batch_size``, i.e. ``SpeechEncoderConfig.batch_size``); for encoders that pad a batch to its longest clip
    (``encoder.pads_batches``) they go shortest first, so each batch holds clips of similar length. Rows of the
    cache keep the manifest's order whatever the order of extraction.

    Bad audio follows ``audio_cfg.on_error``: ``stop`` raises AudioError naming the utterance (work done so far
    is kept); ``skip`` leaves the utterance out and records it in ``skipped.csv``. Under ``stop`` a resumed
    extraction retries utterances an earlier ``skip`` run left out (the file may have been fixed).
    """
    audio_cfg = audio_cfg or AudioConfig()
    corpus = corpus or manifest.corpus
    table = manifest.table
    ids = table["utterance_id"].astype(str).tolist()
    directory = cache_dir(cache_root, corpus, encoder, cache_key(manifest, encoder, audio_cfg))
    retry_skipped = audio_cfg.on_error == "stop"

    if (directory / META).is_file():
        meta = _meta_or_empty(directory)
        if meta.get("complete") and not (retry_skipped and read_skipped(directory)):
            try:  # verified before it is trusted: a damaged finished cache is rebuilt, not used or left to the user
                store = FeatureStore(directory)
                log.info("feature cache hit: %s", directory)
                return store
            except DamagedFileError as e:
                log.warning("%s: extracting the features again", e)

    if not encoder.needs_audio:  # a table/manifest mismatch is a data error, not a bad recording: never skipped
        missing = encoder.missing(ids) if hasattr(encoder, "missing") else []
        if missing:
            raise DataError(f"{len(missing)} utterances of {corpus!r} are not in the feature table of {encoder.name}: "
                            f"{missing[:5]}" + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""))

    directory.mkdir(parents=True, exist_ok=True)
    shape = (len(ids), encoder.num_layers, encoder.dim)
    features, done = _open_arrays(directory, ids, shape)
    skipped = {r["utterance_id"]: r for r in read_skipped(directory)}
    if retry_skipped:
        skipped = {}
    meta = {"corpus": corpus, "encoder_name": encoder.name, "encoder": encoder.fingerprint(),
            "audio": {"sample_rate": audio_cfg.sample_rate, "min_seconds": audio_cfg.min_seconds},
            "shape": list(shape), "dtype": "float32", "complete": False, "cache_version": CACHE_VERSION}
    previous = _meta_or_empty(directory) if (directory / META).is_file() else {}
    meta["seconds"] = float(previous.get("seconds", 0.0))
    _write_meta(directory, meta)

    todo = [i for i in range(len(ids)) if not done[i] and ids[i] not in skipped]
    splits = table["split"].astype(str).tolist()
    rows = table[AUDIO_COLUMNS].to_dict("records")
    batch_size = max(1, int(batch_size or getattr(encoder, "batch_size", 8)))
    if encoder.needs_audio and getattr(encoder, "pads_batches", False):
        todo.sort(key=lambda i: _seconds(rows[i]))  # stable: unknown lengths (inf) last, in manifest order
    from merits.progress import progress

    bar = progress(None, total=len(todo), desc=f"{encoder.name} features", unit="utt")
    started = last_flush = time.monotonic()

    def flush() -> None:
        features.flush()               # data first, then the marks that say it is there
        _save_atomic(directory / DONE, done)
        _write_skipped(directory, skipped)

    def leave_out(i: int, error: AudioError | DataError) -> None:
        if audio_cfg.on_error == "stop":
            raise error
        reason = getattr(error, "reason", str(error))
        skipped[ids[i]] = {"utterance_id": ids[i], "split": splits[i], "audio_path": rows[i]["audio_path"], "reason": reason}
        log.warning("left out %s", error)

    try:
        for b in range(0, len(todo), batch_size):
            group = todo[b:b + batch_size]
            if encoder.needs_audio:
                audios, kept = [], []
                for i in group:
                    try:
                        audios.append(load_utterance(rows[i], audio_cfg))
                        kept.append(i)
                    except AudioError as e:
                        leave_out(i, e)
                outputs = encoder.encode_batch(audios, audio_cfg.sample_rate) if audios else []
            else:
                kept, outputs = [], []
                for i in group:
                    try:
                        outputs.append(encoder.lookup(ids[i]))
                        kept.append(i)
                    except DataError as e:  # e.g. NaN values in the table's row
                        leave_out(i, e)
            for i, y in zip(kept, outputs):
                y = np.asarray(y, dtype=np.float32)
                if y.shape != shape[1:]:
                    raise DataError(f"speech encoder {encoder.name} gave shape {y.shape} for utterance {ids[i]!r}, "
                                    f"expected {shape[1:]}")
                if not np.isfinite(y).all():
                    leave_out(i, AudioError(rows[i]["audio_path"], f"{encoder.name} gave non-finite features", ids[i]))
                    continue
                features[i] = y
                done[i] = True
            bar.update(len(group))
            if time.monotonic() - last_flush > FLUSH_SECONDS:
                flush()
                last_flush = time.monotonic()
    finally:
        bar.close()
        flush()
        meta["seconds"] += time.monotonic() - started
        _write_meta(directory, meta)

    meta["complete"] = True
    meta["counts"] = {"utterances": len(ids), "extracted": int(done.sum()), "skipped": len(skipped)}
    if todo:
        meta["seconds_per_utterance"] = (time.monotonic() - started) / len(todo)
    _write_meta(directory, meta)
    store = FeatureStore(directory)
    (log.warning if skipped else log.info)(store.summary())
    return store


def _seconds(row: dict) -> float:
    """An utterance's duration known without decoding it: end - start, else the file header's duration
    (minus start); inf when neither tells (e.g. a container libsndfile cannot read). Only orders the work."""
    def number(v) -> float | None:
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if np.isfinite(v) else None

    start, end = number(row.get("start")) or 0.0, number(row.get("end"))
    if end is not None:
        return max(0.0, end - start)
    try:
        import soundfile as sf

        return max(0.0, sf.info(str(row["audio_path"])).duration - start)
    except Exception:  # noqa: BLE001 - unreadable here means "unknown", the real decode reports the error
        return float("inf")


def _meta_or_empty(directory: Path) -> dict:
    """A cache's meta.json, or {} when it is damaged (the cache is then rebuilt)."""
    try:
        return read_json(directory / META)
    except DamagedFileError as e:
        log.warning("%s: extracting the features again", e)
        return {}


def _npy_whole(path: Path) -> bool:
    """Whether an .npy file holds every byte its header promises."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return path.stat().st_size >= f.tell() + int(np.prod(shape)) * dtype.itemsize


def _open_arrays(directory: Path, ids: list[str], shape: tuple[int, int, int]):
    """(features memmap opened for writing, done flags): reopened when a compatible partial cache exists."""
    path, ids_path, done_path = directory / FEATURES, directory / IDS, directory / DONE
    if path.is_file() and ids_path.is_file() and done_path.is_file():
        try:
            same_ids = json.loads(ids_path.read_text()) == ids
            if not _npy_whole(path):  # opened "r+", a truncated file would be silently zero-extended
                raise ValueError(f"{path} is shorter than its header says")
            features = np.lib.format.open_memmap(path, mode="r+")
            done = np.load(done_path)
            if same_ids and features.shape == shape and features.dtype == np.float32 and done.shape == (shape[0],):
                log.info("resuming feature extraction in %s: %d of %d done", directory, int(done.sum()), shape[0])
                return features, done.astype(bool)
        except (ValueError, OSError, json.JSONDecodeError):
            pass  # a torn or foreign file: start over
    ids_path.write_text(json.dumps(ids))
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    done = np.zeros(shape[0], dtype=bool)
    _save_atomic(done_path, done)
    return features, done
