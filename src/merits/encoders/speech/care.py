"""``kind: care``: the embeddings of a CARE checkpoint (``merits care pretrain`` writes one; :mod:`merits.care`).

``model`` is the checkpoint directory (``care.json`` + ``model.safetensors``). Each utterance becomes the time-mean
of every hidden state (front end, shared layers, acoustic layers) plus the pooled semantic vector: ``(layers, d)``,
(14, 768) for a WavLM-base CARE, which Stage I speech's softmax layer weights and FC head consume, as in the paper.
The authors publish no weights: a CARE is pretrained with merits first (docs/care.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from merits.runtime import resolve_device
from merits.encoders.speech.base import (EXTRACTION_VERSION, SpeechEncoder, SpeechEncoderConfig, files_identity,
                                         register_speech_encoder, select_layers)
from merits.errors import ModelNotFoundError


class CareSpeechEncoder(SpeechEncoder):
    def __init__(self, cfg: SpeechEncoderConfig):
        from merits.care import CareModel

        path = Path(cfg.model or "")
        if not cfg.model or not (path / "care.json").is_file():
            raise ModelNotFoundError(
                f"speech encoder 'care' needs speech_encoder.model = a CARE checkpoint directory (care.json + "
                f"model.safetensors), got {cfg.model!r}. The paper's authors publish no weights: pretrain one with "
                "merits care pretrain (docs/care.md)")
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model = CareModel.load(path).to(self.device).eval()
        self._layers = select_layers(cfg.layers, self.model.num_layers)
        self.name = f"care-{path.resolve().name}"
        self.num_layers, self.dim = len(self._layers), self.model.dim
        self._identity = files_identity(path)

    def fingerprint(self) -> dict:
        return {"kind": "care", "files": self._identity, "layers": self._layers, "version": EXTRACTION_VERSION}

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        x = torch.from_numpy(self._at_rate(audio, sample_rate)).to(self.device)
        # one utterance per forward pass: the WavLM front end is not padding-invariant (see merits.care.model)
        return self.model.embed(x)[self._layers].float().cpu().numpy()


register_speech_encoder("care", CareSpeechEncoder)
