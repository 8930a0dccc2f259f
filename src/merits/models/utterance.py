"""Stage I models, one utterance at a time: text (a fine-tuned transformer encoder plus a classification head)
and speech (a small head on frozen speech-encoder features).

Text checkpoint layout (a directory), enough to rebuild the model alone:
    encoder/              the fine-tuned encoder + tokenizer in Hugging Face format (safetensors)
    head.safetensors      the classification head
    model_config.json     TextClassifierConfig
The ``encoder/`` folder is itself a valid ``text_encoder.model`` path, so a later run can start from it.
The speech head is a plain model saved with ``merits.models.checkpoint``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from merits.encoders.text import load_tokenizer_and_encoder, pool
from merits.errors import ConfigError, load_safetensors, read_json


@dataclass
class TextClassifierConfig:
    encoder: str             # model id or path the encoder weights come from
    num_classes: int
    labels: tuple = ()       # class names, index = class id
    pooling: str = "mean"    # mean | cls
    dropout: float = 0.1


@dataclass
class UtteranceOutput:
    logits: torch.Tensor      # (B, C)
    embeddings: torch.Tensor  # (B, H) the pooled final-layer utterance embedding


class TextClassifier(nn.Module):
    def __init__(self, config: TextClassifierConfig, encoder=None, tokenizer=None):
        super().__init__()
        self.config = config
        if encoder is None:
            tokenizer, encoder = load_tokenizer_and_encoder(config.encoder)
        self.tokenizer = tokenizer
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, config.num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: torch.Tensor | None = None) -> UtteranceOutput:
        # input_ids, attention_mask: (B, L); pool_mask (B, L): the utterance's own tokens inside a conversation
        # window (merits.encoders.text_context), which mean pooling averages; None: every real token
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        emb = pool(states, attention_mask if pool_mask is None else pool_mask, self.config.pooling)  # (B, H)
        return UtteranceOutput(self.head(self.dropout(emb)), emb)

    # -------------------------------------------------------------- checkpoint
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / "encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(directory / "encoder")
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, str(directory / "head.safetensors"))
        (directory / "model_config.json").write_text(json.dumps(asdict(self.config), indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TextClassifier":
        directory = Path(directory)
        values = read_json(directory / "model_config.json", "retrain the stage that wrote it")
        values["encoder"] = str(directory / "encoder")  # the fine-tuned weights, not the starting point
        values["labels"] = tuple(values.get("labels", ()))
        model = cls(TextClassifierConfig(**values))
        model.head.load_state_dict(load_safetensors(directory / "head.safetensors"))
        return model


# ------------------------------------------------------------------------------------------------ speech
@dataclass
class SpeechHeadConfig:
    """The CARE downstream head (layer weights -> FC 768 -> FC 256 -> classes)."""

    num_layers: int = 0      # L: layers of the frozen encoder's output (filled from the feature store)
    input_dim: int = 0       # D (filled from the feature store)
    num_classes: int = 0     # filled from the manifest's labels
    hidden: list[int] = field(default_factory=lambda: [768, 256])  # FC widths; the last is the exported embedding
    dropout: float = 0.3     # after each FC layer

    def __post_init__(self) -> None:
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must list positive widths, got {self.hidden}")


class SpeechHead(nn.Module):
    """Stage I speech: the CARE downstream head on frozen, time-pooled encoder features.

        (B, L, D) --standardise--> softmax(w) weighted sum over layers --> (B, D)
          --> FC 768 -> ReLU -> dropout -> FC 256 -> ReLU -> dropout --> (B, 256) embedding --> (B, C) logits

    The per-(layer, dim) mean and std of the training features are buffers, so a checkpoint carries its own
    normalisation (openSMILE functionals span many orders of magnitude).
    """

    def __init__(self, config: SpeechHeadConfig):
        super().__init__()
        self.config = config
        self.layer_logits = nn.Parameter(torch.zeros(config.num_layers))  # uniform layer weights at start
        self.register_buffer("mean", torch.zeros(config.num_layers, config.input_dim))
        self.register_buffer("std", torch.ones(config.num_layers, config.input_dim))
        widths = [config.input_dim, *config.hidden]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(config.dropout)]
        self.mlp = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], config.num_classes)

    def set_normalisation(self, features: torch.Tensor) -> None:
        """features: (N, L, D) training features."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp(min=1e-5))

    @property
    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, 0)  # (L,), sums to one

    def forward(self, features: torch.Tensor) -> UtteranceOutput:
        x = (features - self.mean) / self.std                      # (B, L, D)
        pooled = torch.einsum("l,bld->bd", self.layer_weights, x)  # (B, D)
        emb = self.mlp(pooled)                                      # (B, hidden[-1])
        return UtteranceOutput(self.classifier(emb), emb)
