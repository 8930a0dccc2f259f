"""The settings of ``merits serve`` (one dataclass in the one config system: YAML or key=value overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field

from merits.asr.config import ASRConfig
from merits.errors import ConfigError


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"                 # the address to listen on (0.0.0.0: every interface)
    port: int = 8000                        # the port to listen on
    seeds: list[int] | None = None          # trained seeds to replay (several: an ensemble); default the run's first
    stage: str | None = None                # answer with this stage (default the run's last)
    device: str = "auto"                    # cpu | cuda | auto (this machine's GPU if it has one)
    # Whisper, for audio that comes without a transcript (the segmenting endpoint sets segment itself)
    asr: ASRConfig = field(default_factory=ASRConfig)
    max_upload_mb: float = 50.0             # an uploaded file larger than this is refused (413)
    max_audio_seconds: float = 3600.0       # a recording longer than this is refused (413)
    max_turns: int = 2000                   # turns in one request, all its conversations together (413)
    max_text_chars: int = 5000              # characters in one turn's text (413)
    max_batch: int = 64                     # conversations predicted together when requests queue up
    # live conversations (POST /v1/conversations/{id}/turns): a SQLite file; default <run>/serve/live.sqlite
    live_store: str | None = None
    # live turns of a bidirectional run are predicted from the conversation so far; with live_window only from its
    # last N turns (linear time in long conversations, an approximation)
    live_window: int | None = None
    # keep uploaded audio in this directory (one sub-folder per request); default: deleted once answered (live
    # conversations of a run with a speech stage keep their turns' audio until the conversation is deleted)
    keep_uploads: str | None = None
    # who may use it (merits.serve.security): API keys, never on the command line; required when host is not loopback
    api_keys_file: str | None = None        # a file of API keys, one per line (# comments)
    api_keys_env: str = "MERITS_SERVE_API_KEYS"  # an environment variable of comma-separated API keys
    allowed_hosts: list[str] = field(default_factory=list)  # Host names it answers to besides loopback and host

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        for name in ("max_upload_mb", "max_audio_seconds", "max_turns", "max_text_chars", "max_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.live_window is not None and self.live_window < 1:
            raise ConfigError(f"live_window must be at least 1 turn, got {self.live_window}")
