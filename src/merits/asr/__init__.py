"""ASR of unlabelled speech: faster-whisper transcription of a manifest (``transcribe``) and the one WER
implementation (``wer``). Its settings are :class:`ASRConfig` (``config``).

faster-whisper itself is imported only when a :class:`Transcriber` is built.
"""

from merits.asr.config import ASRConfig
from merits.asr.transcribe import REPORT, STORE, ASRResult, Transcriber, TranscriptStore, transcribe_manifest
from merits.asr.wer import (Alignment, CorpusWER, Normalizer, UtteranceWER, align, read_texts, score_by_id, wer,
                            word_error_rate)

__all__ = [
    "ASRConfig", "ASRResult", "REPORT", "STORE", "Transcriber", "TranscriptStore", "transcribe_manifest",
    "Alignment", "CorpusWER", "Normalizer", "UtteranceWER", "align", "read_texts", "score_by_id", "wer",
    "word_error_rate",
]
