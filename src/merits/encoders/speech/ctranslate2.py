"""Whisper's encoder weights read out of a CTranslate2 (faster-whisper) ``model.bin`` into a transformers WhisperEncoder.

Why: the packaged offline Whisper models ship only CTranslate2 weights, whose ``encode()`` returns the final layer
alone; the speech encoder wants every layer. Reading the weights needs numpy only (not the ctranslate2 package).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from merits.errors import ModelNotFoundError


def _ct2_variables(model_bin: Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """Read the variables under ``prefix`` of a CTranslate2 ``model.bin`` as float32 numpy arrays.

    The format is CTranslate2's own (``ctranslate2/specs/model_spec.py``: version, spec name, then per variable
    name, rank, dims, dtype id, byte count, bytes; then aliases, which point a name at an identical variable
    stored once). Int8/int16 weights are dequantised with their ``*_scale``.
    """
    import struct

    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
    index: dict[str, tuple] = {}  # name -> (shape, type id, offset, byte count)
    with open(model_bin, "rb") as f:
        def take(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))

        def string() -> str:
            (n,) = take("<H")
            return f.read(n)[:-1].decode("utf-8")

        (version,) = take("<I")
        if version < 5:
            raise ModelNotFoundError(f"{model_bin}: CTranslate2 model format {version} is too old; reconvert the model")
        string()  # spec name
        take("<I")  # spec revision
        (count,) = take("<I")
        for _ in range(count):
            name = string()
            (rank,) = take("<B")
            shape = take("<" + "I" * rank) if rank else ()
            (type_id,) = take("<B")
            (nbytes,) = take("<I")
            index[name] = (shape, type_id, f.tell(), nbytes)
            f.seek(nbytes, 1)
        (aliases,) = take("<I")
        for _ in range(aliases):
            alias, target = string(), string()
            index[alias] = index[target]
        out: dict[str, np.ndarray] = {}
        for name, (shape, type_id, offset, nbytes) in index.items():
            if not name.startswith(prefix):
                continue
            f.seek(offset)
            raw = f.read(nbytes)
            if dtypes[type_id] == "bfloat16":
                a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, dtypes[type_id])
            out[name] = a.reshape(shape)
    for name in [n for n in out if n.endswith("_scale")]:  # quantised weights: w = q / scale (per output row)
        base = name[: -len("_scale")]
        scale = out.pop(name).astype(np.float32)
        out[base] = out[base].astype(np.float32) / scale.reshape(-1, *([1] * (out[base].ndim - 1)))
    return {k: v if k == prefix + "num_heads" else v.astype(np.float32) for k, v in out.items()}


def whisper_encoder_from_ctranslate2(directory: str | Path):
    """A transformers ``WhisperEncoder`` (float32, eval mode) holding the encoder weights of a CTranslate2 model."""
    import torch
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFWhisperEncoder

    v = _ct2_variables(Path(directory) / "model.bin")
    e = "encoder/"
    n_layers = len({m.group(1) for k in v if (m := re.match(re.escape(e) + r"layer_(\d+)/", k))})
    d_model = v[e + "conv1/weight"].shape[0]
    config = WhisperConfig(
        d_model=d_model, encoder_layers=n_layers, encoder_attention_heads=int(v[e + "num_heads"]),
        encoder_ffn_dim=v[e + "layer_0/ffn/linear_0/weight"].shape[0], num_mel_bins=v[e + "conv1/weight"].shape[1],
        max_source_positions=v[e + "position_encodings/encodings"].shape[0],
        decoder_layers=1, decoder_attention_heads=1, decoder_ffn_dim=4,  # the decoder is never built
    )
    state = {"conv1.weight": v[e + "conv1/weight"], "conv1.bias": v[e + "conv1/bias"],
             "conv2.weight": v[e + "conv2/weight"], "conv2.bias": v[e + "conv2/bias"],
             "embed_positions.weight": v[e + "position_encodings/encodings"],
             "layer_norm.weight": v[e + "layer_norm/gamma"], "layer_norm.bias": v[e + "layer_norm/beta"]}
    for i in range(n_layers):
        src, dst = f"{e}layer_{i}/", f"layers.{i}."
        qkv_w = v[src + "self_attention/linear_0/weight"]  # (3 d, d): q, k, v fused
        qkv_b = v[src + "self_attention/linear_0/bias"]    # k's bias is dropped: it shifts every score equally
        q_w, k_w, v_w = np.split(qkv_w, 3)
        q_b, _, v_b = np.split(qkv_b, 3)
        state.update({
            dst + "self_attn.q_proj.weight": q_w, dst + "self_attn.q_proj.bias": q_b,
            dst + "self_attn.k_proj.weight": k_w,
            dst + "self_attn.v_proj.weight": v_w, dst + "self_attn.v_proj.bias": v_b,
            dst + "self_attn.out_proj.weight": v[src + "self_attention/linear_1/weight"],
            dst + "self_attn.out_proj.bias": v[src + "self_attention/linear_1/bias"],
            dst + "self_attn_layer_norm.weight": v[src + "self_attention/layer_norm/gamma"],
            dst + "self_attn_layer_norm.bias": v[src + "self_attention/layer_norm/beta"],
            dst + "fc1.weight": v[src + "ffn/linear_0/weight"], dst + "fc1.bias": v[src + "ffn/linear_0/bias"],
            dst + "fc2.weight": v[src + "ffn/linear_1/weight"], dst + "fc2.bias": v[src + "ffn/linear_1/bias"],
            dst + "final_layer_norm.weight": v[src + "ffn/layer_norm/gamma"],
            dst + "final_layer_norm.bias": v[src + "ffn/layer_norm/beta"],
        })
    encoder = HFWhisperEncoder(config)
    encoder.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in state.items()}, strict=True)
    return encoder.eval()
