"""CARE, the MERITS-L paper's speech encoder: no public weights, so ``kind: care`` explains where weights plug in.

Whoever holds CARE weights registers a SpeechEncoder subclass under ``care`` (replacing this factory); see docs/speech.md.
"""

from __future__ import annotations

from merits.encoders.speech.base import SpeechEncoder, SpeechEncoderConfig, register_speech_encoder
from merits.errors import ModelNotFoundError


def _build_care(cfg: SpeechEncoderConfig) -> SpeechEncoder:
    raise ModelNotFoundError(
        "speech encoder 'care': the CARE encoder used by the MERITS-L paper has no public weights, so it cannot run here. "
        "Use kind=opensmile (eGeMAPSv02 / ComParE_2016), kind=whisper (packaged tiny.en, all layers) or kind=hf "
        "(WavLM / HuBERT / wav2vec 2.0 by id or path). If you hold CARE weights: write a SpeechEncoder subclass "
        "(encode(audio, sample_rate) -> (layers, dim) float32; name, num_layers, dim, fingerprint()) and register it "
        "with merits.encoders.speech.register_speech_encoder('care', YourCareEncoder); see docs/speech.md."
    )


register_speech_encoder("care", _build_care)
