"""Text encoders: any Hugging Face encoder by model id or local path, plus models that ship inside a package.

Nothing is fetched at run time unless the name is a hub id and the machine can reach the hub; a model that
cannot be loaded raises ModelNotFoundError saying which model and how to provide it.
"""

from __future__ import annotations

import torch
from torch import nn

from merits import packaged
from merits.encoders.pretrained import load_pretrained


def resolve_model(name: str) -> str:
    """A local directory for packaged models and existing paths; hub ids are returned unchanged."""
    return packaged.resolve_model(name, "text")


def load_tokenizer_and_encoder(name: str):
    """(tokenizer, transformers model) for ``name``; a clear error when the weights are not on this machine."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, encoder = load_pretrained(
        "text encoder", name, resolve_model(name), (AutoTokenizer.from_pretrained, AutoModel.from_pretrained),
        f" (text_encoder.model=/path/to/{name.split('/')[-1]})",
        packaged.offline_hint("text", "text_encoder.model"))
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
    """Tokenises utterances once, then pads any subset of them into a batch (stages sort subsets by length so
    that little compute goes to padding)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def tokenize(self, texts) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``, unpadded."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    def pad(self, token_ids, spans=None) -> dict:
        """A batch of token-id lists -> input_ids and attention_mask, (B, L) each, padded to the longest. ``spans``
        ([start, end) per input: its own turn inside a conversation window) adds pool_mask (B, L), True there."""
        enc = self.tokenizer.pad({"input_ids": list(token_ids)}, padding=True, return_tensors="pt")
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if spans is not None:
            width = out["input_ids"].shape[1]
            left = self.tokenizer.padding_side == "left"
            pool = torch.zeros_like(out["attention_mask"], dtype=torch.bool)
            for b, ((start, end), ids) in enumerate(zip(spans, token_ids)):
                shift = width - len(ids) if left else 0
                pool[b, shift + start:shift + end] = True
            out["pool_mask"] = pool
        return out

    def encode(self, texts) -> dict:
        return self.pad(self.tokenize(texts))


def describe(encoder: nn.Module) -> str:
    n = sum(p.numel() for p in encoder.parameters())
    return f"{encoder.config.model_type} ({n / 1e6:.1f}M parameters, hidden {encoder.config.hidden_size})"
