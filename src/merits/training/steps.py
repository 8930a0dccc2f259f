"""Step-based training (pretraining: no epochs, no classes), resumable from its last checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from merits.faults import kill_point
from merits.progress import progress
from merits.training.checkpoint import rng_state, set_rng_state, swap_in
from merits.training.loop import LossFn, SchedulerFactory, Trainer

log = logging.getLogger("merits")


STEP_STATE = "trainer_state.pt"   # optimiser, scheduler, scaler, RNG states, step, history (tensors + plain data)
STEP_WEIGHTS = "model.safetensors"


def fit_steps(trainer: Trainer, model: nn.Module, batch_at: Callable[[int], dict], loss_of: LossFn,
              optimizer: torch.optim.Optimizer, steps: int, directory: Path, checkpoint_every: int,
              validate: Callable[[nn.Module], dict] | None = None, validate_every: int = 0,
              scheduler: SchedulerFactory | None = None) -> list[dict]:
    """Step-based training for pretraining (no epochs, no classes): ``steps`` optimiser steps of ``accumulate``
    global batches each, ``batch_at(k)`` giving the k-th global batch (deterministic in k: the data position is the
    step count). Every ``checkpoint_every`` steps (and at the end) the model (safetensors), the optimiser, scheduler
    and scaler states, the RNG states, the step and the history are written to ``directory`` (atomically); a call
    that finds them resumes there, so a kill loses at most ``checkpoint_every`` steps and the result equals an
    uninterrupted run's. ``validate(model)`` every ``validate_every`` steps returns {name: value}. Returns the
    history: per logged step, the mean of each loss part since the previous log, steps/s, validation values."""
    cfg, dev, dist = trainer.cfg, trainer.device, trainer.dist
    directory = Path(directory)
    model.to(dev)
    net = dist.wrap(model)
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
    sched = scheduler(optimizer, steps) if scheduler is not None else None
    start, history = _resume_steps(directory, model, optimizer, sched, scaler, dev)
    log_every = max(1, min(checkpoint_every, validate_every or checkpoint_every, 50))
    parts: dict[str, torch.Tensor] = {}
    count, clock = 0, time.perf_counter()
    bar = progress(range(start, steps), desc=trainer.desc, initial=start, total=steps)
    for step in bar:
        model.train()
        group = [batch_at(step * cfg.accumulate + j) for j in range(cfg.accumulate)]
        n = sum(int(b["n"]) for b in group)  # real items of the step, all processes
        _, named = trainer.step(net, model, group, n, loss_of, optimizer, scaler, sched)
        for k, v in named.items():
            parts[k] = parts.get(k, 0) + v
        count += n
        done = step + 1
        if done % log_every == 0 or done == steps:
            record = {"step": done, **{k: sum(dist.gather(float(v))) / max(count, 1) for k, v in parts.items()},
                      "steps_per_s": (done - (history[-1]["step"] if history else start)) / (time.perf_counter() - clock)}
            if validate is not None and validate_every and (done % validate_every == 0 or done == steps):
                model.eval()
                record.update({f"validation_{k}": v for k, v in validate(model).items()})
            history.append(record)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"})
            log.info("%s step %d/%d: %s", trainer.desc, done, steps,
                     ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step"))
            parts, count, clock = {}, 0, time.perf_counter()
        if done % checkpoint_every == 0 or done == steps:
            if dist.is_main:
                _save_steps(directory, done, model, optimizer, sched, scaler, history)
            dist.barrier()
    return history


def _save_steps(directory: Path, step: int, model, optimizer, sched, scaler, history) -> None:
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / STEP_WEIGHTS))
        torch.save({"step": step, "optimizer": optimizer.state_dict(),
                    "scheduler": sched.state_dict() if sched else None, "scaler": scaler.state_dict(),
                    "rng": rng_state(), "history": history}, tmp / STEP_STATE)

    swap_in(directory, write)
    kill_point("steps.checkpointed")


def _resume_steps(directory: Path, model, optimizer, sched, scaler, device) -> tuple[int, list]:
    for candidate in (directory, directory.with_name(directory.name + ".old")):  # .old: killed mid-rename
        if (candidate / STEP_STATE).is_file() and (candidate / STEP_WEIGHTS).is_file():
            from merits.errors import load_safetensors

            model.load_state_dict(load_safetensors(candidate / STEP_WEIGHTS, "pt", "delete it to start over"))
            state = torch.load(candidate / STEP_STATE, map_location="cpu", weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
            if sched is not None and state["scheduler"] is not None:
                sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            model.to(device)
            log.info("resuming at step %d from %s", state["step"], candidate)
            return int(state["step"]), list(state["history"])
    return 0, []
