"""This process' place among the data-parallel processes (one, unless started by ``accelerate launch`` or
``torchrun``), and the collectives merits uses: barrier, gather, the DDP wrapper of a model.

Accelerate owns the process group (``PartialState``: nccl on GPUs, gloo on CPUs) and wraps models
(``Accelerator.prepare_model``, one Accelerator per process); this module only says which process this is.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # the device Accelerate assigned (its local GPU, or cpu)

    @staticmethod
    def current() -> "Distributed":
        if _ALONE or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Distributed()
        from accelerate import PartialState  # initialises the process group once

        state = PartialState(cpu=not torch.cuda.is_available())  # cpu: MULTI_CPU over gloo
        return Distributed(state.process_index, state.num_processes, state.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def gather(self, obj) -> list:
        """Every process' ``obj``, in rank order (on every process)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module an optimiser steps through: the model itself alone, DistributedDataParallel (through the
        process' Accelerator) among several."""
        return model if self.world == 1 else _accelerator().prepare_model(model)


@functools.lru_cache(maxsize=1)
def _accelerator():
    """The process' one Accelerator (made on first need, only among several processes)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # find_unused_parameters: a Hugging Face encoder's pooler takes no part in the loss
    return Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


_ALONE: list = []  # non-empty while this process works alone (see alone())


@contextlib.contextmanager
def alone():
    """Inside: this process trains and predicts by itself, even when started among several (a stage that rank 0
    computes while the others wait must not wait for them in a collective)."""
    _ALONE.append(True)
    try:
        yield
    finally:
        _ALONE.pop()


def shard(batch: dict, rank: int, world: int) -> dict:
    """This process' slice of a global batch: the rows (dim 0) of every tensor in it (inputs, labels, mask,
    targets; one level of nesting) split into ``world`` contiguous parts; other values are dropped."""
    part = lambda t: torch.tensor_split(t, world)[rank]  # noqa: E731
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            out[key] = part(value)
        elif isinstance(value, dict):
            out[key] = {k: part(v) if torch.is_tensor(v) else v for k, v in value.items()}
    return out
