"""One runtime per process: the ``torch.device`` every component works on, CPU threads and the data-parallel rank.

    runtime = Runtime.create(cfg.device, cfg.threads)   # once, by merits train / predict / serve
    Trainer(sc, runtime, "Text I"); build_speech_encoder(cfg, runtime.device); Transcriber(asr, runtime.device)

The device is resolved here only, and kept whole: ``cuda:1`` reaches the stages, the speech encoder, Whisper and a
local teacher alike (a component that took only the device's type would land on ``cuda:0``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from merits.distributed import Distributed


def resolve_device(name: "str | torch.device | None" = "auto") -> torch.device:
    """``auto`` (or None, "") is cuda when available, else cpu; anything else as torch reads it (``cuda:1``)."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    threads: int | None = None

    @property
    def dist(self) -> Distributed:
        """This process' place among the data-parallel processes, now: alone inside ``merits.distributed.alone()``
        (a stage rank 0 computes while the others wait must not wait for them in a collective)."""
        return Distributed.current()

    @classmethod
    def create(cls, device: "str | torch.device | None" = "auto", threads: int | None = None) -> "Runtime":
        """The process' runtime: among several data-parallel processes each uses the device Accelerate gave it (its
        own GPU), whatever ``device`` says."""
        dist = Distributed.current()
        if threads:
            torch.set_num_threads(threads)
        chosen = dist.device if dist.world > 1 and dist.device is not None else resolve_device(device)
        return cls(chosen, threads)

    @classmethod
    def of(cls, device: "Runtime | str | torch.device | None") -> "Runtime":
        """A runtime from what a caller gives: a Runtime as it is, a device name (``cpu``, ``auto``) made one."""
        return device if isinstance(device, Runtime) else cls.create(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
