"""Training state on disk: written whole under a temporary name and swapped in, so that a kill at any moment leaves
the previous state or the new one; the RNG states that make a resumed run equal an uninterrupted one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])


def swap_in(directory: Path, write: Callable[[Path], None]) -> None:
    """Write a checkpoint directory under a temporary name, then swap it for the old one: a kill at any moment
    leaves the previous checkpoint or this one (``<dir>.old`` while swapping), never half of one."""
    tmp = directory.with_name(directory.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    replace_dir(tmp, directory)


def replace_dir(new: Path, path: Path) -> None:
    """Put the complete directory ``new`` in ``path``'s place: the old one is renamed aside (``<path>.old``) first and
    removed last, so a kill at any moment leaves the old directory or the new one, never a mix."""
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    new.rename(path)
    shutil.rmtree(old, ignore_errors=True)
