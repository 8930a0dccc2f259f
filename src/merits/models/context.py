"""Stage II: a conversation model over frozen Stage I utterance embeddings (one modality).

    (B, T, D) utterance embeddings --dropout--> Bi-GRU --> (B, T, 2H)
      --> multi-head self-attention over the conversation (padded turns masked) + residual + LayerNorm
      --> (B, T, 2H) contextual embeddings c_i --> linear --> (B, T, C) logits

Padding never changes a real utterance's output: the GRU runs on packed sequences (the backward direction
starts at each conversation's real last turn) and attention ignores padded keys.
No speaker identities are used.

``causal`` (not in the paper; for live use): a one-directional GRU of 2H units (the same output width) and attention
masked to earlier turns, so that turn t's output depends on turns 0..t only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from merits.errors import ConfigError


@dataclass
class ConversationModelConfig:
    input_dim: int = 0       # D of the Stage I embeddings: filled from the data (dataclasses.replace)
    num_classes: int = 0     # filled from the manifest's labels
    hidden: int = 128        # GRU units per direction (output is 2 * hidden)
    heads: int = 4                             # self-attention heads over the conversation
    dropout: float = 0.3                       # on the GRU and attention outputs
    input_dropout: float = 0.2                 # on the frozen Stage I inputs (their training rows are cleaner than test rows)
    causal: bool = False     # not in the paper: turn t sees turns 0..t only (a GRU of 2 * hidden units, one
                             # direction; attention to earlier turns), for live use

    def __post_init__(self) -> None:
        if self.hidden < 1 or (2 * self.hidden) % self.heads:
            raise ConfigError(f"heads ({self.heads}) must divide 2 * hidden ({2 * self.hidden})")


@dataclass
class ContextOutput:
    logits: torch.Tensor      # (B, T, C)
    embeddings: torch.Tensor  # (B, T, 2H) contextual utterance embeddings


class ConversationModel(nn.Module):
    def __init__(self, config: ConversationModelConfig):
        super().__init__()
        self.config = config
        width = 2 * config.hidden
        self.input_dropout = nn.Dropout(config.input_dropout)
        # causal: one direction of 2H units keeps the output width (B, T, 2H) of the bidirectional GRU
        self.gru = nn.GRU(config.input_dim, width if config.causal else config.hidden, batch_first=True,
                          bidirectional=not config.causal)
        self.attention = nn.MultiheadAttention(width, config.heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(width, config.num_classes)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> ContextOutput:
        # embeddings: (B, T, D); mask: (B, T) True at real utterances
        lengths = mask.sum(1).clamp(min=1).cpu()
        x = self.input_dropout(embeddings)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=embeddings.shape[1])  # (B, T, 2H), zeros at pads
        a, _ = self.attention(h, h, h, key_padding_mask=~mask, attn_mask=future_mask(mask) if self.config.causal else None,
                              need_weights=False)                                           # (B, T, 2H)
        c = self.norm(h + self.dropout(a))                                                  # (B, T, 2H)
        return ContextOutput(self.classifier(self.dropout(c)), c)


def future_mask(mask: torch.Tensor) -> torch.Tensor:
    """(T, T) boolean attention mask, True where a query turn would attend to a later turn. mask: (B, T)."""
    t = mask.shape[1]
    return torch.triu(torch.ones(t, t, dtype=torch.bool, device=mask.device), diagonal=1)
