"""Stage I text: a (fine-tuned) transformer encoder plus a classification head, one utterance at a time.

Checkpoint layout (a directory), enough to rebuild the model alone:
    encoder/              the fine-tuned encoder + tokenizer in Hugging Face format (safetensors)
    head.safetensors      the classification head
    model_config.json     TextClassifierConfig
The ``encoder/`` folder is itself a valid ``text_encoder.model`` path, so a later run can start from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from merits.encoders.text import load_tokenizer_and_encoder, pool


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> UtteranceOutput:
        # input_ids, attention_mask: (B, L)
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        emb = pool(states, attention_mask, self.config.pooling)  # (B, H)
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
        values = json.loads((directory / "model_config.json").read_text())
        values["encoder"] = str(directory / "encoder")  # the fine-tuned weights, not the starting point
        values["labels"] = tuple(values.get("labels", ()))
        model = cls(TextClassifierConfig(**values))
        model.head.load_state_dict(load_file(str(directory / "head.safetensors")))
        return model
