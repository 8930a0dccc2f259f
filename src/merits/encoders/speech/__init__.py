"""Frozen speech encoders behind one contract: 16 kHz audio in, a ``(layers, dim)`` float32 array per utterance out.

Kinds (``SpeechEncoderConfig.kind``), one module each:

    opensmile    opensmile.py    eGeMAPSv02 (88) or ComParE_2016 (6373) functionals              -> (1, 88 | 6373)
    whisper      whisper.py      Whisper encoder states, mean over the frames that hold audio    -> (encoder_layers + 1, d_model)
                                 (CTranslate2 weights read by ctranslate2.py)
    hf           hf.py           WavLM / HuBERT / wav2vec 2.0 by id or path, every hidden state,  -> (num_hidden_layers + 1, hidden)
                                 mean over real frames, padded batches with an attention mask
    precomputed  precomputed.py  a CSV keyed by utterance id (e.g. CMU-MOSI's a0..a72)           -> (1, columns)
    care         care.py         the paper's CARE encoder: no public weights; raises ModelNotFoundError saying where they plug in

The contract, the config, layer selection, device resolution and the registry are in base.py. Importing this
package registers every built-in kind; a new encoder is a :class:`SpeechEncoder` subclass registered with
:func:`register_speech_encoder`.
"""

from merits.encoders.speech.base import (
    EXTRACTION_VERSION,
    POOLINGS,
    SPEECH_ENCODERS,
    SpeechEncoder,
    SpeechEncoderConfig,
    build_speech_encoder,
    files_identity,
    register_speech_encoder,
    select_layers,
)
from merits.encoders.speech.opensmile import OpenSmileEncoder
from merits.encoders.speech.ctranslate2 import whisper_encoder_from_ctranslate2
from merits.encoders.speech.whisper import (
    DEFAULT_WHISPER,
    WHISPER_FRAMES_PER_SECOND,
    WHISPER_WINDOW_SECONDS,
    WhisperSpeechEncoder,
    resolve_whisper,
)
from merits.encoders.speech.hf import HFSpeechEncoder
from merits.encoders.speech.precomputed import PrecomputedFeatures
from merits.encoders.speech import care as _care  # noqa: F401  (registers kind "care")

__all__ = [
    "DEFAULT_WHISPER", "EXTRACTION_VERSION", "HFSpeechEncoder", "OpenSmileEncoder", "POOLINGS",
    "PrecomputedFeatures", "SPEECH_ENCODERS", "SpeechEncoder", "SpeechEncoderConfig", "WHISPER_FRAMES_PER_SECOND",
    "WHISPER_WINDOW_SECONDS", "WhisperSpeechEncoder", "build_speech_encoder", "files_identity",
    "register_speech_encoder", "resolve_whisper", "select_layers", "whisper_encoder_from_ctranslate2",
]
