"""Self-supervised speech models from transformers (WavLM, HuBERT, wav2vec 2.0, ...) -> (num_hidden_layers + 1, hidden)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from merits.audio import SAMPLE_RATE
from merits.encoders.pretrained import load_pretrained
from merits.runtime import resolve_device
from merits.encoders.speech.base import (EXTRACTION_VERSION, SpeechEncoder, SpeechEncoderConfig, _safe, files_identity,
                                         register_speech_encoder, select_layers)
from merits.errors import ConfigError, ModelNotFoundError


def _load_hf(name: str):
    from transformers import AutoFeatureExtractor, AutoModel

    path = Path(name).expanduser()
    where = str(path) if path.is_dir() else name
    if not path.is_dir() and name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"speech encoder path {name!r} does not exist")
    features, model = load_pretrained(
        "speech encoder", name, where, (AutoFeatureExtractor.from_pretrained, AutoModel.from_pretrained),
        f" and preprocessor_config.json (model=/path/to/{name.split('/')[-1]})",
        "use an offline encoder: kind=opensmile, or kind=whisper (packaged tiny.en)")
    return where, features, model.eval()


class HFSpeechEncoder(SpeechEncoder):
    """A self-supervised speech model (WavLM, HuBERT, wav2vec 2.0, ...) from transformers: every hidden state
    (the CNN/projection output, then each transformer layer), mean-pooled over the real frames -> (num_hidden_layers + 1, hidden).

    Audio longer than ``chunk_seconds`` is cut into windows (bounded memory); the frame sums of all windows of an
    utterance are pooled together (a frame-weighted mean). Windows go through the model ``batch_size`` at a time,
    longest first so that little is padded. Batching is exact only where padding cannot leak into the real frames,
    see :attr:`pads_exactly`; other models are batched only over windows of equal length (no padding at all).
    """

    def __init__(self, cfg: SpeechEncoderConfig):
        if not cfg.model:
            raise ConfigError("speech encoder kind 'hf' needs model: a transformers model id or local directory")
        self.cfg = cfg
        self.batch_size = cfg.batch_size
        where, self._features, self._model = _load_hf(cfg.model)
        if self._model.config.model_type == "whisper":
            raise ConfigError(f"{cfg.model!r} is a Whisper model: use speech encoder kind 'whisper'")
        self.device = resolve_device(cfg.device)  # the model and its inputs go there; pooled sums come back to cpu
        self._model.to(self.device)
        self._layers = select_layers(cfg.layers, self._model.config.num_hidden_layers + 1)
        self.sample_rate = int(getattr(self._features, "sampling_rate", SAMPLE_RATE))
        self.name = f"hf-{_safe(Path(where).name if Path(where).is_dir() else cfg.model.split('/')[-1])}"
        self.num_layers = len(self._layers)
        self.dim = self._model.config.hidden_size
        self._source = {"name_or_path": cfg.model, "model_type": self._model.config.model_type,
                        "revision": getattr(self._model.config, "_commit_hash", None)}
        if Path(where).is_dir():
            self._source["files"] = files_identity(Path(where))
        # Why padding is exact only for "layer" feature encoders: with feat_extract_norm == "layer" every CNN
        # frame is normalised on its own, a real frame's receptive field holds only real samples, and the
        # transformer zeroes padded frames (before its positional convolution) and masks them out of attention,
        # so the first n frames of a padded clip equal the clip alone. With "group" (wav2vec2-base, HuBERT-base,
        # WavLM-base: GroupNorm over time in the first conv layer; their feature extractors say
        # return_attention_mask=False) the padding's zeros enter every frame's normalisation statistics and change
        # all features, attention mask or not. Those models batch only windows of equal length.
        self.pads_exactly = getattr(self._model.config, "feat_extract_norm", None) == "layer"
        self.pads_batches = self.pads_exactly  # tells extract_features that length-sorted groups pad less

    def fingerprint(self) -> dict:
        # batch_size and device are left out on purpose: they do not change the features (checked to 1e-4)
        return {"kind": "hf", "source": self._source, "layers": self._layers, "pooling": self.cfg.pooling,
                "chunk_seconds": self.cfg.chunk_seconds, "sample_rate": self.sample_rate, "version": EXTRACTION_VERSION}

    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.encode_batch([audio], sample_rate)[0]

    def encode_batch(self, audios: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """(samples,) clips -> one (num_layers, dim) float32 array each, in the order given."""
        window = max(1, int(self.cfg.chunk_seconds * self.sample_rate))
        pieces, owner = self._windows(audios, sample_rate, window)  # every window of every clip, and its clip
        sums = [np.zeros((self.num_layers, self.dim), np.float64) for _ in audios]
        frames = [0] * len(audios)
        for group in self._groups([len(p) for p in pieces]):
            pooled, counts = self._pooled_sums([pieces[p] for p in group])  # (B, L, D) float64, (B,)
            for j, p in enumerate(group):
                sums[owner[p]] += pooled[j]
                frames[owner[p]] += int(counts[j])
        return [(s / max(n, 1)).astype(np.float32) for s, n in zip(sums, frames)]

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Piece indices per forward pass: longest first, ``batch_size`` at a time; only equal lengths together
        unless padding is exact."""
        order = sorted(range(len(lengths)), key=lambda p: -lengths[p])  # stable: ties keep their order
        groups: list[list[int]] = []
        for p in order:
            last = groups[-1] if groups else None
            if last is not None and len(last) < self.batch_size and (self.pads_exactly or lengths[last[0]] == lengths[p]):
                last.append(p)
            else:
                groups.append([p])
        return groups

    def _pooled_sums(self, batch: list[np.ndarray]):
        """Sum over the real frames of each selected hidden state: ((B, L_sel, D) float64, (B,) real frames).

        A padded batch carries a sample-level attention mask (B, samples); the model turns it into frames with
        ``_get_feat_extract_output_lengths`` (the CNN's kernel/stride arithmetic), and so do we for pooling.
        """
        import torch

        padded = len({len(x) for x in batch}) > 1
        if padded:
            # return_attention_mask=True also makes the extractor normalise (do_normalize) over the real samples only
            inputs = self._features(batch, sampling_rate=self.sample_rate, return_tensors="pt", padding=True,
                                    return_attention_mask=True)
            mask = inputs["attention_mask"].to(self.device)  # (B, samples) 1 = real sample
            kwargs = {"attention_mask": mask}
        else:  # no padding: exactly the one-clip call (no mask), whatever the model
            inputs = self._features(batch, sampling_rate=self.sample_rate, return_tensors="pt")
            kwargs = {}
        values = inputs["input_values"].to(self.device)  # (B, samples)
        with torch.inference_mode():
            out = self._model(input_values=values, output_hidden_states=True, **kwargs)
            t = out.hidden_states[0].shape[1]  # frames of the longest clip
            if padded:
                real = self._model._get_feat_extract_output_lengths(mask.sum(-1)).long()  # (B,) real frames
            else:
                real = torch.full((len(batch),), t, dtype=torch.long, device=values.device)
            keep = (torch.arange(t, device=values.device)[None, :] < real[:, None]).double()  # (B, T) 1 = real frame
            # per selected layer: (B, T, D) -> masked sum over T -> (B, D); stacked to (B, L_sel, D)
            sums = torch.stack([(out.hidden_states[i].double() * keep[..., None]).sum(1) for i in self._layers], 1)
        return sums.cpu().numpy(), real.cpu().numpy()


register_speech_encoder("hf", HFSpeechEncoder)
