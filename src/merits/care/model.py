"""CARE (Dutta & Ganapathy 2024, arXiv 2409.05566), the paper's speech encoder, built from its description.

    waveform (B, S) --WavLM conv front end + projection (frozen)--> (B, T, d), T = frames at 50 Hz
      --positional conv, layer norm--> WavLM layers 0..5 (shared, trained) = h (B, T, d)
      semantic branch:  h --Conv1d(k 5, stride 3)--> (B, T/3, d) --RoBERTa layers 6..11 (frozen)-->
                          --ConvTranspose1d(k 5, stride 3)--> (B, ~T, d) --mean over time--> (B, d)
                        loss: MSE to the mean-pooled last-layer text-encoder embedding of the utterance's transcript
      acoustic branch:  h.detach() --WavLM layers 6..11 (trained)--> (B, T, d) --Linear(d -> A)--> (B, T, A)
                        loss: MSE to frame-level acoustic features at 50 Hz (PASE+ in the paper, A = 256)

The acoustic loss does not reach the shared layers (the branch reads ``h.detach()``; the authors zero that gradient),
so layers 0..5 learn from the semantic distillation only. Downstream (``embed``): the time-mean of every hidden state
(front end, shared layers, acoustic layers) plus the pooled semantic vector, as merits' ``(layers, dim)`` speech
feature: (1 + 6 + 6 + 1, d) for a 12-layer WavLM.

All utterances of one batch must have the same length (WavLM-base's group-normalised front end is not
padding-invariant): pretraining uses fixed-length crops, and ``embed`` runs one utterance at a time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from merits.errors import ConfigError


@dataclass
class CareConfig:
    backbone: str = "microsoft/wavlm-base-plus"  # WavLM id or path (the paper: WavLM-base)
    text_model: str = "roberta-base"             # whose layers shared_layers.. (frozen) form the semantic branch
    shared_layers: int = 6                       # WavLM layers 0..k-1 shared by both branches (trained)
    down_kernel: int = 5                         # semantic branch: Conv1d down-sampling before the text layers ...
    down_stride: int = 3                         # ... and the ConvTranspose1d that restores the frame rate after
    acoustic_dim: int = 256                      # A: width of the acoustic target (PASE+ 256; filled from the targets)

    def __post_init__(self) -> None:
        if self.shared_layers < 1:
            raise ConfigError(f"care.shared_layers must be >= 1, got {self.shared_layers}")


@dataclass
class CareOutput:
    semantic: torch.Tensor          # (B, d) pooled semantic vector
    acoustic: torch.Tensor          # (B, T, A) per-frame acoustic predictions
    hidden_states: list             # [(B, T, d)]: front end, shared layers, acoustic layers


class CareModel(nn.Module):
    def __init__(self, config: CareConfig, wavlm: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.config = config
        layers = len(wavlm.encoder.layers)
        text_layers = len(text_encoder.encoder.layer)
        k = config.shared_layers
        if not k < layers or not k < text_layers:
            raise ConfigError(f"care.shared_layers {k}: the backbone has {layers} layers and the text model "
                              f"{text_layers}; both need more than {k}")
        d, d_text = wavlm.config.hidden_size, text_encoder.config.hidden_size
        self.front = wavlm.feature_extractor            # conv front end, frozen
        self.projection = wavlm.feature_projection      # (B, T, conv_dim) -> (B, T, d), frozen
        self.position = wavlm.encoder.pos_conv_embed
        self.norm = wavlm.encoder.layer_norm
        self.shared = nn.ModuleList(wavlm.encoder.layers[:k])
        self.acoustic_layers = nn.ModuleList(wavlm.encoder.layers[k:])
        self.down = nn.Conv1d(d, d_text, config.down_kernel, stride=config.down_stride)
        self.semantic_layers = nn.ModuleList(text_encoder.encoder.layer[k:])  # frozen
        self.up = nn.ConvTranspose1d(d_text, d_text, config.down_kernel, stride=config.down_stride)
        self.acoustic_head = nn.Linear(d, config.acoustic_dim)
        for frozen in (self.front, self.projection, self.semantic_layers):
            frozen.requires_grad_(False)
        self.backbone_config, self.text_config = wavlm.config, text_encoder.config

    def train(self, mode: bool = True) -> "CareModel":
        """The frozen parts (front end, projection, the text layers) stay in eval mode: fixed feature extractors,
        no dropout inside them."""
        super().train(mode)
        for frozen in (self.front, self.projection, self.semantic_layers):
            frozen.eval()
        return self

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, config: CareConfig) -> "CareModel":
        """From the pretrained backbone and text model (ids or paths); nothing is downloaded unless they are hub
        ids and the hub is reachable."""
        from transformers import AutoModel, WavLMModel

        return cls(config, WavLMModel.from_pretrained(config.backbone), AutoModel.from_pretrained(config.text_model))

    @property
    def dim(self) -> int:
        return self.backbone_config.hidden_size

    @property
    def num_layers(self) -> int:
        """Rows of ``embed``: front end + every WavLM layer + the pooled semantic vector."""
        return 1 + len(self.shared) + len(self.acoustic_layers) + 1

    # ------------------------------------------------------------------ forward
    def _frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, S) audio at 16 kHz -> (B, T, d) frames, positions added and normalised (WavLM's encoder input)."""
        features = self.front(waveform).transpose(1, 2)  # (B, T, conv_dim)
        hidden, _ = self.projection(features)             # (B, T, d)
        return self.norm(hidden + self.position(hidden))

    def forward(self, waveform: torch.Tensor) -> CareOutput:
        h = self._frames(waveform)
        states, bias = [h], None
        for i, layer in enumerate(self.shared):
            h, bias = layer(h, position_bias=bias, index=i)
            states.append(h)
        semantic = self._semantic(h)
        a, a_bias = h.detach(), bias.detach() if bias is not None else None  # the gradient stop (see above)
        for i, layer in enumerate(self.acoustic_layers, start=len(self.shared)):
            a, a_bias = layer(a, position_bias=a_bias, index=i)
            states.append(a)
        return CareOutput(semantic, self.acoustic_head(a), states)

    def _semantic(self, h: torch.Tensor) -> torch.Tensor:
        x = self.down(h.transpose(1, 2)).transpose(1, 2)  # (B, T', d_text), T' ~ T / stride
        for layer in self.semantic_layers:
            out = layer(x)
            x = out[0] if isinstance(out, tuple) else out
        return self.up(x.transpose(1, 2)).transpose(1, 2).mean(1)  # (B, ~T, d_text) -> (B, d_text)

    @torch.no_grad()
    def embed(self, waveform: torch.Tensor) -> torch.Tensor:
        """(S,) or (1, S) audio -> (num_layers, d): the time-mean of every hidden state, then the semantic vector."""
        out = self(waveform.reshape(1, -1))
        rows = [s.mean(1)[0] for s in out.hidden_states] + [out.semantic[0]]
        return torch.stack(rows)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path) -> Path:
        """safetensors weights + care.json (the CARE config and both backbones' configs: it rebuilds alone)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / "model.safetensors"))
        (directory / "care.json").write_text(json.dumps(
            {"care": asdict(self.config), "backbone": self.backbone_config.to_dict(),
             "text": self.text_config.to_dict()}, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "CareModel":
        from transformers import AutoConfig, AutoModel, WavLMConfig, WavLMModel

        from merits.errors import load_safetensors, read_json

        directory = Path(directory)
        meta = read_json(directory / "care.json", "retrain it with merits care pretrain")
        backbone = WavLMModel(WavLMConfig(**meta["backbone"]))
        text_meta = dict(meta["text"])
        text = AutoModel.from_config(AutoConfig.for_model(text_meta.pop("model_type"), **text_meta))
        model = cls(CareConfig(**meta["care"]), backbone, text)
        model.load_state_dict(load_safetensors(directory / "model.safetensors", "pt"))
        return model
