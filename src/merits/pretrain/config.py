"""The settings of ``merits pretrain`` (beside the code that reads them; :mod:`merits.config` only loads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from merits.config import TextEncoderConfig
from merits.stages.text_utterance import Stage1TextConfig
from merits.errors import ConfigError


@dataclass
class PretrainConfig:
    """``merits pretrain``: fine-tune a text encoder on teacher pseudo-labels ("RoBERTa-FT" in the paper).

    Load with ``load_config(path_or_None, overrides, cls=PretrainConfig)``. The paper: RoBERTa-large, 10 epochs,
    batch 32, AdamW, cross-entropy, a random 80/20 train/validation split, model selection on validation.
    ``train`` takes the Trainer's settings too (precision, accumulate); several processes train data-parallel
    (``accelerate launch -m merits pretrain ...``).
    """

    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)  # the starting point
    train: Stage1TextConfig = field(default_factory=lambda: Stage1TextConfig(epochs=10, batch_size=32, patience=3))
    labels: list[str] = field(default_factory=lambda: ["negative", "neutral", "positive"])  # the teacher's classes
    validation_fraction: float = 0.2           # random utterances held out for model selection
    seed: int = 0                              # the held-out split and the training
    device: str = "auto"                       # auto (cuda when available) | cpu | cuda
    threads: int | None = None                 # torch CPU threads; None = torch default

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"pretrain.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if len(set(self.labels)) < 2:
            raise ConfigError(f"pretrain.labels needs at least two classes, got {self.labels}")
