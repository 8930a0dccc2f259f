"""Audio input: decode any utterance to 16 kHz float32 mono, cut it by seconds, and reject bad audio clearly.

Why one loader: every speech encoder must see the same samples for the same manifest row, whatever the
container (wav / flac / mp3 through libsndfile, mp4 / m4a / anything else through FFmpeg via PyAV), so the
feature cache stays valid and results do not depend on which decoder happened to be used.

Shapes: :func:`load_audio` returns ``(samples,)`` float32 in [-1, 1] at ``sample_rate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from merits.errors import ConfigError, DataError

SAMPLE_RATE = 16000
END_TOLERANCE = 0.01  # seconds: an ``end`` this little past the file end is read as "up to the end" (rounding)
ON_ERROR = ("stop", "skip")


class AudioError(DataError):
    """An utterance's audio is missing, undecodable or unusable; the message names the file, utterance and reason."""

    def __init__(self, path: str | Path, reason: str, utterance_id: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.utterance_id = utterance_id
        who = f"utterance {utterance_id!r}: " if utterance_id is not None else ""
        super().__init__(f"{who}audio {self.path}: {reason}")

    def for_utterance(self, utterance_id: str) -> "AudioError":
        """The same error, now naming the manifest utterance it belongs to."""
        return AudioError(self.path, self.reason, utterance_id)


@dataclass
class AudioConfig:
    """How utterance audio is read and what happens to bad audio (values from YAML)."""

    sample_rate: int = SAMPLE_RATE  # every encoder receives audio at this rate
    min_seconds: float = 0.1        # shorter audio is rejected as too short
    on_error: str = "stop"          # stop: raise on the first bad utterance | skip: leave it out, record it in skipped.csv

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"audio.on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if self.sample_rate <= 0 or self.min_seconds < 0:
            raise ConfigError(f"audio: sample_rate must be > 0 and min_seconds >= 0 (got {self.sample_rate}, {self.min_seconds})")


# ---------------------------------------------------------------------------------------------- decoding
def _read_soundfile(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    """libsndfile: wav / flac / ogg / mp3, with seeking so that a cut of a long file reads only the cut."""
    import soundfile as sf

    info = sf.info(str(path))
    sr = info.samplerate
    _check_wav_length(path, info.frames)
    first, last = _frames(path, start, end, sr, info.frames)
    x = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)[0]  # (samples, channels)
    return x, sr


def _check_wav_length(path: Path, frames: int) -> None:
    """A WAV file whose data chunk is shorter than its header declares (a cut-off copy or download): libsndfile
    would decode what is there without a word, so the utterance would silently lose its end."""
    if path.suffix.lower() not in (".wav", ".wave"):
        return
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        block = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"fmt ":
                fmt = f.read(size)
                block = int.from_bytes(fmt[12:14], "little")  # bytes per frame (all channels)
                continue
            if name == b"data":
                present = path.stat().st_size - f.tell()
                if block and size != 0xFFFFFFFF and present < size:  # 0xFFFFFFFF: a stream of unknown length
                    rate = int.from_bytes(fmt[4:8], "little") or 1
                    raise AudioError(path, f"truncated: the header declares {size / block / rate:.3f} s of audio, "
                                           f"the file holds {present / block / rate:.3f} s")
                return
            f.seek(size + (size & 1), 1)


def _read_av(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    """FFmpeg via PyAV: the first audio track of any container (mp4, m4a, mkv, webm, mp3, ...)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(path, "the file has no audio track")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate or stream.rate
        chunks = []
        for frame in container.decode(stream):
            a = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
            if not frame.format.is_planar:
                a = a.reshape(-1, len(frame.layout.channels)).T
            chunks.append(a.astype(np.float32) * _int_scale(a.dtype))
    x = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, 1), np.float32)  # (samples, channels)
    first, last = _frames(path, start, end, sr, len(x))
    return x[first:last], sr


def _int_scale(dtype) -> float:
    """Integer PCM -> [-1, 1]."""
    if np.issubdtype(dtype, np.integer):
        return 1.0 / float(np.iinfo(dtype).max + 1)
    return 1.0


def _frames(path: Path, start: float | None, end: float | None, sr: int, total: int) -> tuple[int, int]:
    """Frame range [first, last) of a cut in seconds; errors name the file and the file's duration."""
    duration = total / sr
    s = 0.0 if start is None or (isinstance(start, float) and math.isnan(start)) else float(start)
    e = None if end is None or (isinstance(end, float) and math.isnan(end)) else float(end)
    if s < 0:
        raise AudioError(path, f"start {s:.3f} s is negative")
    if e is not None:
        if e <= s:
            raise AudioError(path, f"end {e:.3f} s is not after start {s:.3f} s")
        if e > duration + END_TOLERANCE:
            raise AudioError(path, f"end {e:.3f} s is beyond the end of the file ({duration:.3f} s)")
    if s > duration:
        raise AudioError(path, f"start {s:.3f} s is beyond the end of the file ({duration:.3f} s)")
    first = int(round(s * sr))
    last = total if e is None else min(total, int(round(e * sr)))
    return first, last


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy): exact rational ratio, (samples,) -> (samples * sr_out / sr_in,)."""
    if sr_in == sr_out or len(x) == 0:
        return x
    from scipy.signal import resample_poly

    ratio = Fraction(sr_out, sr_in)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def load_audio(path: str | Path, start: float | None = None, end: float | None = None,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path`` (seconds ``start``..``end`` when given) to ``(samples,)`` float32 mono in [-1, 1] at ``sample_rate``.

    Channels are averaged. Raises AudioError for a missing file, an undecodable one, or a cut outside the file.
    An empty or silent result is returned as is: :func:`check_audio` decides whether it is usable.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    try:
        x, sr = _read_soundfile(path, start, end)
    except AudioError:
        raise
    except Exception as first_error:  # not a libsndfile format (mp4, aac, ...): let FFmpeg try
        try:
            x, sr = _read_av(path, start, end)
        except AudioError:
            raise
        except Exception as e:
            reason = str(e).strip() or type(e).__name__
            raise AudioError(path, f"cannot decode ({reason}; libsndfile: {str(first_error).strip()})") from e
    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    out = resample(np.ascontiguousarray(mono, dtype=np.float32), sr, sample_rate)
    return np.clip(out, -1.0, 1.0, out=out)  # NaN stays NaN, so check_audio still sees it


def check_audio(x: np.ndarray, path: str | Path, min_seconds: float, sample_rate: int = SAMPLE_RATE,
                utterance_id: str | None = None) -> None:
    """Raise AudioError when ``x`` (samples,) cannot represent speech: empty, NaN/inf, all zero, or too short."""
    if x.size == 0:
        raise AudioError(path, "empty audio (0 samples)", utterance_id)
    if not np.isfinite(x).all():
        raise AudioError(path, f"audio holds {int((~np.isfinite(x)).sum())} NaN or infinite samples", utterance_id)
    if not np.any(x):
        raise AudioError(path, f"audio is all zeros ({x.size / sample_rate:.3f} s of digital silence)", utterance_id)
    seconds = x.size / sample_rate
    if seconds < min_seconds:
        raise AudioError(path, f"audio is too short ({seconds:.3f} s < min_seconds {min_seconds} s)", utterance_id)


def load_utterance(row, cfg: AudioConfig) -> np.ndarray:
    """The checked audio of one manifest row (a mapping with utterance_id, audio_path, start, end)."""
    uid = str(row["utterance_id"])
    path = str(row.get("audio_path", "") or "")
    if not path:
        raise AudioError("<none>", "the manifest gives no audio_path", uid)
    try:
        x = load_audio(path, row.get("start"), row.get("end"), cfg.sample_rate)
        check_audio(x, path, cfg.min_seconds, cfg.sample_rate)
    except AudioError as e:
        raise e.for_utterance(uid) from e
    return x
