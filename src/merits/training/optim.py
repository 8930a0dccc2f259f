"""The optimiser and learning-rate schedule every stage uses: AdamW with decoupled weight decay (none on biases and
LayerNorm weights of a pretrained encoder), and a linear warm-up then linear decay."""

from __future__ import annotations

import torch
from torch import nn

from merits.training.loop import SchedulerFactory


def adamw(model: nn.Module, lr: float, weight_decay: float, *, encoder: nn.Module | None = None,
          encoder_lr: float | None = None, betas: tuple[float, float] = (0.9, 0.999),
          params=None) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters (or ``params``). With ``encoder`` (a pretrained transformer inside the
    model): the encoder at ``encoder_lr`` with no decay on its biases and LayerNorm weights (BERT's recipe), every
    other parameter at ``lr``."""
    if encoder is None:
        return torch.optim.AdamW(model.parameters() if params is None else params, lr=lr, betas=betas,
                                 weight_decay=weight_decay)
    plain = lambda n: n.endswith("bias") or "LayerNorm" in n  # noqa: E731
    mine = {id(p) for p in encoder.parameters()}
    return torch.optim.AdamW([
        {"params": [p for n, p in encoder.named_parameters() if not plain(n)], "lr": encoder_lr, "weight_decay": weight_decay},
        {"params": [p for n, p in encoder.named_parameters() if plain(n)], "lr": encoder_lr, "weight_decay": 0.0},
        {"params": [p for p in model.parameters() if id(p) not in mine], "lr": lr, "weight_decay": weight_decay},
    ], betas=betas)


def linear_warmup(warmup_ratio: float) -> SchedulerFactory:
    """A scheduler factory: linear warm-up to the base learning rate over ``warmup_ratio`` of the steps, then
    linear decay to zero."""

    def build(optimizer, total_steps: int):
        warmup = max(1, int(total_steps * warmup_ratio))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    return build
