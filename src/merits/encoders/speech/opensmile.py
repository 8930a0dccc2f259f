"""openSMILE functionals of the whole utterance -> (1, 88) for eGeMAPSv02, (1, 6373) for ComParE_2016.

Runs on the CPU (openSMILE is C++): ``SpeechEncoderConfig.device`` does not apply.
"""

from __future__ import annotations

import numpy as np

from merits.encoders.speech.base import (EXTRACTION_VERSION, SpeechEncoder, SpeechEncoderConfig,
                                         register_speech_encoder, select_layers)
from merits.errors import ConfigError, ModelNotFoundError


class OpenSmileEncoder(SpeechEncoder):
    """openSMILE functionals of the whole utterance: one layer of 88 (eGeMAPSv02) or 6373 (ComParE_2016) values."""

    DIMS = {"eGeMAPSv02": 88, "ComParE_2016": 6373, "GeMAPSv01b": 62, "eGeMAPSv01b": 88, "emobase": 988}

    def __init__(self, cfg: SpeechEncoderConfig):
        try:
            import opensmile
        except ImportError as e:
            raise ModelNotFoundError("the openSMILE speech encoder needs the package 'opensmile': pip install opensmile") from e
        self.feature_set = cfg.model or "eGeMAPSv02"
        if not hasattr(opensmile.FeatureSet, self.feature_set):
            raise ConfigError(f"unknown openSMILE feature set {self.feature_set!r}; "
                              f"known: {[f.name for f in opensmile.FeatureSet]}")
        select_layers(cfg.layers, 1)
        self._smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.feature_set),
                                      feature_level=opensmile.FeatureLevel.Functionals)
        self._version = opensmile.__version__
        self.name = f"opensmile-{self.feature_set}"
        self.num_layers = 1
        self.dim = len(self._smile.feature_names)

    def fingerprint(self) -> dict:
        return {"kind": "opensmile", "feature_set": self.feature_set, "opensmile": self._version,
                "sample_rate": self.sample_rate, "version": EXTRACTION_VERSION}

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        x = self._at_rate(audio, sample_rate)
        values = self._smile.process_signal(x, self.sample_rate).to_numpy(dtype=np.float32)  # (1, dim)
        return values.reshape(1, self.dim)


register_speech_encoder("opensmile", OpenSmileEncoder)
