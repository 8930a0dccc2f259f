"""Batched Hugging Face speech-encoder extraction against one utterance at a time: the largest feature difference.

    python benchmarks/speech_batching.py

A tiny randomly initialised WavLM (LayerNorm CNN feature encoder, so padded batching is exact; no weights can be
downloaded here) encodes 16 real EmoDB clips cut to 16 different lengths (0.5 s to 3.5 s), once in padded batches
of 8 with an attention mask and once clip by clip. :func:`measure` returns the max absolute difference over all
(16, layers, dim) features; the project's tests hold it under 1e-4. Writes no results file (benchmarks/trainer.py
imports :func:`measure` and records it).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importable from any cwd, like the other benchmarks
os.environ.setdefault("MERITS_QUIET", "1")

EMODB = Path(__file__).resolve().parents[2] / "shared" / "data" / "emodb"
CLIPS = 16
BATCH = 8


def clips(n: int = CLIPS) -> list[np.ndarray]:
    """n real EmoDB clips (16 kHz) of n different lengths from 0.5 s to 3.5 s, in no particular length order
    (each is one 2.0 s EmoDB recording joined to the next, then cut)."""
    from merits.audio import load_audio

    names = sorted(p.name for p in (EMODB / "wav").glob("*.wav"))[:: max(1, 535 // (n + 1))][: n + 1]
    if len(names) < n + 1:
        raise FileNotFoundError(f"EmoDB clips not found under {EMODB / 'wav'}")
    audio = [load_audio(EMODB / "wav" / name) for name in names]
    seconds = np.linspace(0.5, 3.5, n)[np.random.default_rng(0).permutation(n)]
    return [np.concatenate([audio[k], audio[k + 1]])[: int(16000 * s)] for k, s in enumerate(seconds)]


def tiny_wavlm(directory: Path) -> str:
    """A tiny random WavLM (hidden 32, 2 layers) with a LayerNorm feature encoder, saved with its feature extractor."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(32, 32), conv_stride=(5, 5), conv_kernel=(10, 3), feat_extract_norm="layer",
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    WavLMModel(config).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True, do_normalize=True).save_pretrained(directory)
    return str(directory)


def measure(device: str = "auto") -> float:
    """Max |batched - one-by-one| over the (16, 3, 32) features of 16 EmoDB clips of different lengths."""
    from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder

    audio = clips()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = build_speech_encoder(SpeechEncoderConfig(kind="hf", model=tiny_wavlm(Path(tmp)), batch_size=BATCH,
                                                           device=device))
        batched = np.stack(encoder.encode_batch(audio, 16000))           # (16, 3, 32), padded batches of 8
        single = np.stack([encoder.encode(a, 16000) for a in audio])     # (16, 3, 32), one clip per forward pass
    return float(np.abs(batched - single).max())


if __name__ == "__main__":
    print(f"max abs difference, batched vs one-by-one ({CLIPS} EmoDB clips, batches of {BATCH}): {measure():.3g}")
