"""Prediction with a trained model: logits and embeddings of the real utterances of every batch, as float32, in
the precision the model was trained in (autocast; the weights stay fp32)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from merits.progress import progress

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Predictions:
    utterance_ids: list
    label_ids: np.ndarray    # (N,) class ids, IGNORE where unknown
    logits: np.ndarray       # (N, C)
    embeddings: np.ndarray   # (N, D)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @staticmethod
    def concat(parts: list["Predictions"]) -> "Predictions":
        parts = [p for p in parts if len(p.utterance_ids)]
        return Predictions([u for p in parts for u in p.utterance_ids], np.concatenate([p.label_ids for p in parts]),
                           np.concatenate([p.logits for p in parts]), np.concatenate([p.embeddings for p in parts]))




def autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def to_device(batch_inputs: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch_inputs.items()}


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[dict], device, desc: str = "predict",
            precision: str = "fp32") -> Predictions:
    """Run the model over batches; gather logits and embeddings of the real utterances only (as float32)."""
    device = torch.device(device)
    model.eval()
    ids, labels, logits, embeddings = [], [], [], []
    for batch in progress(batches, desc=desc):
        with autocast(device, precision):
            out = model(**to_device(batch["inputs"], device))
        lab = batch["labels"]
        mask = batch.get("mask", torch.ones_like(lab, dtype=torch.bool))
        logits.append(out.logits[mask.to(device)].float().cpu())        # (n_real, C)
        embeddings.append(out.embeddings[mask.to(device)].float().cpu())  # (n_real, D)
        labels.append(lab[mask])
        ids.extend(batch["utterance_ids"])
    if not ids:
        return Predictions([], np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
    return Predictions(ids, torch.cat(labels).numpy(), torch.cat(logits).numpy(), torch.cat(embeddings).numpy())

