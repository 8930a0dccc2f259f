"""Stage III: co-attention fusion of the two Stage II contextual sequences of one conversation.

ViLBERT-style co-attention layer, applied ``layers`` times; text queries speech and speech queries text at once:

    t: (B, T, Dt) --linear--> (B, T, d);   s: (B, T, Ds) --linear--> (B, T, d)
    t' = LN(t + MHA(q=t, k=s, v=s));  t'' = LN(t' + FFN(t'))        (speech keys at padded turns masked)
    s' = LN(s + MHA(q=s, k=t, v=t));  s'' = LN(s' + FFN(s'))        (text keys at padded turns masked)
    [t'' ; s''] : (B, T, 2d) --linear--> (B, T, C) logits per utterance

Padding changes no real output: every attention masks padded keys and everything else is per position.
``causal`` (for live use): each turn attends to the other stream's turns up to itself only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from merits.errors import ConfigError

from merits.models.context import ContextOutput, ConversationModel, ConversationModelConfig, future_mask


@dataclass
class FusionModelConfig:
    text_dim: int = 0           # widths of the Stage II inputs and the classes: filled from the data
    audio_dim: int = 0          # (filled from the data)
    num_classes: int = 0        # (filled from the manifest's labels)
    d_model: int = 128          # both streams are projected to this width
    heads: int = 4              # co-attention heads
    layers: int = 1             # co-attention blocks (each stream queries the other)
    feedforward: int = 256      # width of each block's feed-forward layer
    dropout: float = 0.1        # inside the blocks
    input_dropout: float = 0.0  # on the frozen Stage II inputs: their training-set rows are cleaner than test rows
    causal: bool = False        # not in the paper: turn t attends to turns 0..t of the other stream only
    modality_dropout: float = 0.0  # not in the paper: in training, this share of conversations has one stream
                                   # (text or audio, at random) zeroed, so the fusion cannot lean on one alone

    def __post_init__(self) -> None:
        if not 0 <= self.modality_dropout < 1:
            raise ConfigError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if self.d_model < 1 or self.d_model % self.heads:
            raise ConfigError(f"heads ({self.heads}) must divide d_model ({self.d_model})")


class CrossAttentionBlock(nn.Module):
    """One direction of a co-attention layer: queries from one stream, keys and values from the other."""

    def __init__(self, d: int, heads: int, feedforward: int, dropout: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, feedforward), nn.GELU(), nn.Dropout(dropout), nn.Linear(feedforward, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, other: torch.Tensor, pad: torch.Tensor,
                future: torch.Tensor | None = None) -> torch.Tensor:
        # query, other: (B, T, d); pad: (B, T) True at padded turns; future: (T, T) True where attention is barred
        a, _ = self.attention(query, other, other, key_padding_mask=pad, attn_mask=future, need_weights=False)
        x = self.norm1(query + self.dropout(a))
        return self.norm2(x + self.dropout(self.ff(x)))  # (B, T, d)


class CoAttentionFusion(nn.Module):
    def __init__(self, config: FusionModelConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.text_in, self.audio_in = nn.Linear(config.text_dim, d), nn.Linear(config.audio_dim, d)
        block = lambda: CrossAttentionBlock(d, config.heads, config.feedforward, config.dropout)  # noqa: E731
        self.text_queries = nn.ModuleList(block() for _ in range(config.layers))
        self.audio_queries = nn.ModuleList(block() for _ in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * d, config.num_classes)

    def forward(self, text: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> ContextOutput:
        # text: (B, T, Dt), audio: (B, T, Ds), mask: (B, T) True at real utterances
        pad = ~mask
        if self.training and self.config.modality_dropout > 0:
            dropped = torch.rand(text.shape[0], device=text.device) < self.config.modality_dropout  # (B,)
            text_side = torch.rand(text.shape[0], device=text.device) < 0.5  # which stream a dropped one loses
            text = text * (~(dropped & text_side)).to(text.dtype)[:, None, None]
            audio = audio * (~(dropped & ~text_side)).to(audio.dtype)[:, None, None]
        t, s = self.text_in(self.input_dropout(text)), self.audio_in(self.input_dropout(audio))  # (B, T, d) each
        future = future_mask(mask) if self.config.causal else None
        for text_block, audio_block in zip(self.text_queries, self.audio_queries):
            t, s = text_block(t, s, pad, future), audio_block(s, t, pad, future)  # both directions from the same inputs
        fused = torch.cat([t, s], dim=-1)  # (B, T, 2d)
        return ContextOutput(self.classifier(self.dropout(fused)), fused)


@dataclass
class CombinedModelConfig:
    text: ConversationModelConfig
    audio: ConversationModelConfig
    fusion: FusionModelConfig

    def __post_init__(self) -> None:
        # rebuilt from a checkpoint's model_config.json, the parts arrive as dicts
        for name, cls in (("text", ConversationModelConfig), ("audio", ConversationModelConfig),
                          ("fusion", FusionModelConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))


class CombinedModel(nn.Module):
    """The paper's "combined" ablation: Stage II of each modality and Stage III as one network, trained end to end
    on the Stage I embeddings (the hierarchy instead trains them one after the other, each on frozen inputs).

        text (B, T, Dt) --ConversationModel--> (B, T, 2Ht) \\
                                                             CoAttentionFusion --> (B, T, C) logits
        audio (B, T, Ds) --ConversationModel--> (B, T, 2Hs) /
    """

    def __init__(self, config: CombinedModelConfig):
        super().__init__()
        self.config = config
        self.text_context = ConversationModel(config.text)
        self.audio_context = ConversationModel(config.audio)
        self.fusion = CoAttentionFusion(config.fusion)

    def forward(self, text: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> ContextOutput:
        t = self.text_context(text, mask).embeddings    # (B, T, 2Ht)
        s = self.audio_context(audio, mask).embeddings  # (B, T, 2Hs)
        return self.fusion(t, s, mask)
