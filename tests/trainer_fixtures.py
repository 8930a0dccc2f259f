"""Tiny conversation data and a tiny Stage II model for the Trainer tests; run as a script under torchrun it is the
data-parallel worker of ``test_two_processes_equal_one`` (and of benchmarks/trainer.py).

    python -m torch.distributed.run --nproc_per_node 2 tests/trainer_fixtures.py OUT.safetensors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from merits.models.context import ConversationModel, ConversationModelConfig
from merits.training import IGNORE, Trainer, TrainerConfig

DIM, CLASSES = 8, 3


def conversation_data(n: int, seed: int):
    """n conversations of 2-6 turns: features (n, 6, DIM), labels (n, 6) with unlabelled turns, lengths (n,)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, n)
    feats = rng.normal(size=(n, 6, DIM)).astype(np.float32)
    labels = rng.integers(0, CLASSES, (n, 6))
    labels[rng.random((n, 6)) < 0.2] = IGNORE  # some turns carry no label
    for i, t in enumerate(lengths):
        labels[i, t:] = IGNORE
    return feats, labels, lengths


def global_batches(feats, labels, lengths, size: int) -> list[dict]:
    """Padded batches of ``size`` conversations in order: inputs (B, T, DIM) + mask (B, T), labels (B, T)."""
    out = []
    for s in range(0, len(lengths), size):
        sl = slice(s, s + size)
        t = int(lengths[sl].max())
        mask = torch.arange(t)[None, :] < torch.as_tensor(lengths[sl])[:, None]
        y = torch.as_tensor(labels[sl, :t])
        ids = [f"c{s + b}_{k}" for b in range(mask.shape[0]) for k in range(int(mask[b].sum()))]
        out.append({"inputs": {"embeddings": torch.as_tensor(feats[sl, :t]), "mask": mask}, "labels": y, "mask": mask,
                    "utterance_ids": ids})
    return out


def tiny_model() -> ConversationModel:
    return ConversationModel(ConversationModelConfig(input_dim=DIM, num_classes=CLASSES, hidden=4, heads=2, dropout=0.0,
                                                     input_dropout=0.0))


def train_steps(batches: list[dict], cfg: TrainerConfig, validation: list[dict] | None = None, trainer=None):
    """The weights (a state dict) after training a fresh tiny model (seed 0) on ``batches`` for cfg.epochs."""
    torch.manual_seed(0)
    model = tiny_model()
    trainer = trainer or Trainer(cfg, "cpu")
    # plain SGD: the weights then follow the gradient linearly, so equal gradients give equal weights (Adam's first
    # step, lr * g / |g|, turns float noise on a zero gradient, e.g. an attention key bias's, into a full step)
    trainer.fit(model, lambda e: batches, lambda: validation or batches, torch.optim.SGD(model.parameters(), lr=cfg.lr))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, model, trainer


def _worker(out: Path) -> None:
    feats, labels, lengths = conversation_data(16, seed=2)
    batches = global_batches(feats, labels, lengths, 4)
    trainer = Trainer(TrainerConfig(epochs=1, patience=1, lr=1e-2), "cpu")
    state, model, trainer = train_steps(batches[:3], trainer.cfg, validation=batches[3:], trainer=trainer)
    gathered = trainer.predict(model, batches[3:])
    if trainer.dist.is_main:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(out))
        out.with_suffix(".json").write_text(json.dumps({
            "world": trainer.dist.world, "validation_n": len(gathered.utterance_ids),
            "validation_expected": sum(len(b["utterance_ids"]) for b in batches[3:])}))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
