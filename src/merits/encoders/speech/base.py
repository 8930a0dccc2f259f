"""The speech-encoder contract: 16 kHz audio in, a ``(layers, dim)`` float32 array per utterance out.

Why one contract (s3prl's upstream interface): Stage I speech trains a small head on cached features and may mix
layers; it must not care whether they came from openSMILE functionals (1 layer), a Whisper encoder (all layers),
a self-supervised model (all layers) or a table of precomputed vectors (1 layer).

This module holds what every back-end shares: the config, the base class, layer selection, the torch device
resolution and the registry. Each back-end lives in its own module of this package (opensmile, whisper, hf,
precomputed, care) and registers itself; a new encoder is a :class:`SpeechEncoder` subclass registered with
:func:`register_speech_encoder`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from merits.audio import SAMPLE_RATE, resample
from merits.errors import ConfigError

EXTRACTION_VERSION = 1  # bump when a change here changes the features of an unchanged config (invalidates caches)
POOLINGS = ("mean",)


@dataclass
class SpeechEncoderConfig:
    """Which frozen speech encoder produces the features (values from YAML)."""

    kind: str = "opensmile"          # opensmile | whisper | hf | precomputed | care
    model: str | None = None         # opensmile: feature set (eGeMAPSv02 default, ComParE_2016); whisper/hf: id or path
                                     # (whisper default: packaged tiny.en); precomputed: the CSV table's path
    pooling: str = "mean"            # over time frames; mean is the only pooling so far
    layers: str = "all"              # all | last | comma-separated layer indices, e.g. "0,4,-1" (0 = input embeddings)
    id_column: str | None = None     # precomputed: the table's utterance id column (default: utterance_id or utt_id)
    feature_columns: str = r"^a\d+$"  # precomputed: regex (full match) picking the feature columns
    chunk_seconds: float = 30.0      # hf: longer audio is encoded in windows this long (bounded memory), frame-weighted mean
    batch_size: int = 8              # whisper / hf: clips (windows) per forward pass; also the extraction's group size
    device: str = "auto"             # torch device for whisper / hf: auto (cuda when available) | cpu | cuda[:i]
                                     # (not in the fingerprint: cpu and gpu give the same features)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"speech encoder pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.chunk_seconds <= 0 or self.batch_size < 1:
            raise ConfigError("speech encoder chunk_seconds must be > 0 and batch_size >= 1")


class SpeechEncoder:
    """Base of every speech encoder.

    Subclasses set ``name`` (stable, used in cache directory names), ``num_layers`` and ``dim`` (after layer
    selection) and implement :meth:`encode` (or :meth:`lookup` when ``needs_audio`` is False).
    """

    name: str = "speech"
    num_layers: int = 1
    dim: int = 0
    needs_audio: bool = True
    sample_rate: int = SAMPLE_RATE  # the rate encode() works at; other rates are resampled first
    batch_size: int = 8             # utterances extract_features hands to encode_batch at once
    pads_batches: bool = False      # True: encode_batch pads to the longest clip, so length-sorted groups are cheaper

    def fingerprint(self) -> dict:
        """Everything that determines the outputs (hashed into the feature cache key); never the device."""
        raise NotImplementedError

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """(samples,) float32 mono -> (num_layers, dim) float32."""
        raise NotImplementedError

    def encode_batch(self, audios: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Several utterances at once; the default encodes them one by one."""
        return [self.encode(a, sample_rate) for a in audios]

    def lookup(self, utterance_id: str) -> np.ndarray:
        """(1, dim) features of an utterance, for encoders that do not read audio."""
        raise TypeError(f"speech encoder {self.name!r} computes features from audio; use encode()")

    def _windows(self, audios: list[np.ndarray], sample_rate: int, window: int) -> tuple[list[np.ndarray], list[int]]:
        """Every clip at the encoder's rate cut into windows of ``window`` samples: (the windows, the clip each
        belongs to). A clip shorter than a window is one window."""
        pieces, owner = [], []
        for i, a in enumerate(audios):
            x = self._at_rate(a, sample_rate)
            for s in range(0, max(len(x), 1), window):
                pieces.append(x[s:s + window])
                owner.append(i)
        return pieces, owner

    def _at_rate(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return resample(np.asarray(audio, dtype=np.float32), sample_rate, self.sample_rate)


def select_layers(spec: str, total: int) -> list[int]:
    """Layer indices (0..total-1) named by ``spec``: all | last | "i,j,..." (negative counts from the end)."""
    spec = str(spec).strip()
    if spec == "all":
        return list(range(total))
    if spec == "last":
        return [total - 1]
    try:
        wanted = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"speech encoder layers must be all, last or comma-separated integers, got {spec!r}") from None
    bad = [i for i in wanted if not -total <= i < total]
    if bad or not wanted:
        raise ConfigError(f"speech encoder layers {spec!r}: this encoder has layers 0..{total - 1}")
    return [i % total for i in wanted]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def files_identity(directory: Path) -> list:
    """Cheap identity of a model directory: name, size and a hash of the first and last MiB of each file."""
    out = []
    for f in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        h = hashlib.sha256()
        size = f.stat().st_size
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
        out.append([f.name, size, h.hexdigest()[:16]])
    return out


# ================================================================================================ registry
# kind -> factory; the back-end modules of this package add themselves when the package is imported.
SPEECH_ENCODERS: dict[str, Callable[[SpeechEncoderConfig], SpeechEncoder]] = {}


def register_speech_encoder(kind: str, factory: Callable[[SpeechEncoderConfig], SpeechEncoder]) -> None:
    """Make ``kind`` build with ``factory`` (a SpeechEncoder class or function of the config)."""
    SPEECH_ENCODERS[kind] = factory


def build_speech_encoder(cfg: SpeechEncoderConfig | dict) -> SpeechEncoder:
    """The encoder named by ``cfg.kind``; ConfigError for an unknown kind, ModelNotFoundError for missing weights."""
    if isinstance(cfg, dict):
        cfg = SpeechEncoderConfig(**cfg)
    factory = SPEECH_ENCODERS.get(cfg.kind)
    if factory is None:
        raise ConfigError(f"unknown speech encoder kind {cfg.kind!r}; known: {sorted(SPEECH_ENCODERS)}")
    return factory(cfg)
