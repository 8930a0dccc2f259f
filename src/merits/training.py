"""The ONE training loop every stage uses (and pretraining).

A stage hands the :class:`Trainer` a model, batch iterators, an optimiser and a scheduler factory; the loop trains
with cross-entropy, evaluates weighted F1 on the validation split after every epoch, keeps the best weights (never
looking at the test split), stops early when validation stops improving, and restores the best weights at the end.

On real hardware it also runs:
  - mixed precision (``precision: bf16 | fp16``; autocast, and a GradScaler for fp16, unscaled before clipping);
  - gradient accumulation (``accumulate: N``): the loss of an optimiser step is the sum over the real utterances of
    its N batches divided by their count, so N batches of B give the gradient of one batch of N*B;
  - data-parallel training on several processes through Hugging Face Accelerate (``accelerate launch`` or
    ``torchrun``): each global batch is sharded over the processes, gradients are all-reduced, validation
    predictions are gathered so that weighted F1 is computed on the whole split on every process.

Batches are dicts:
    inputs   dict of tensors passed to ``model(**inputs)``; batch-major (dim 0 = utterances or conversations)
    labels   LongTensor (B,) or (B, T); NO_LABEL (-100) where there is no label (padding, unlabelled)
    mask     optional BoolTensor with the shape of ``labels``: the real utterances (default: all)
    utterance_ids  list of the ids of the real utterances, in row-major order of ``mask``
Models return an output object with ``logits`` (..., C) and ``embeddings`` (..., D) over the same leading shape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from merits.data.manifest import NO_LABEL
from merits.errors import ConfigError
from merits.faults import kill_point
from merits.metrics import weighted_f1

log = logging.getLogger("merits")
IGNORE = NO_LABEL  # the loss' ignore_index: the one "no label" class id (merits.data.manifest.NO_LABEL)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainerConfig:
    """What the loop needs of a stage's config; every stage config extends it (with its own defaults)."""

    epochs: int = 10                           # at most this many passes over the training data (see patience)
    batch_size: int = 32
    lr: float = 1e-3                           # AdamW learning rate
    weight_decay: float = 1e-4                 # AdamW weight decay
    patience: int = 3                          # epochs without validation wF1 gain before stopping
    precision: str = "fp32"                    # fp32 | bf16 | fp16 (autocast; fp16 with a GradScaler)
    accumulate: int = 1                        # batches per optimiser step
    grad_clip: float | None = 1.0              # max gradient norm; null = no clipping

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patience", "accumulate"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: {self.precision!r} is not one of {list(PRECISIONS)}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def progress(iterable, **kwargs):
    """tqdm that stays quiet when MERITS_QUIET is set (tests, benchmarks writing logs) and off rank 0."""
    quiet = bool(os.environ.get("MERITS_QUIET")) or not Distributed.current().is_main
    return tqdm(iterable, disable=quiet, dynamic_ncols=True, leave=False, **kwargs)


def _to(batch_inputs: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch_inputs.items()}


# ------------------------------------------------------------------------------------------------ processes
@dataclass(frozen=True)
class Distributed:
    """This process' place among the data-parallel processes (one, unless started by accelerate launch / torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # the device Accelerate assigned (its local GPU, or cpu)

    @staticmethod
    def current() -> "Distributed":
        if _ALONE or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Distributed()
        from accelerate import PartialState  # initialises the process group (nccl on GPUs, gloo on CPUs) once

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


# ------------------------------------------------------------------------------------------------ results
@dataclass
class Predictions:
    utterance_ids: list
    labels: np.ndarray       # (N,) class ids, IGNORE where unknown
    logits: np.ndarray       # (N, C)
    embeddings: np.ndarray   # (N, D)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @staticmethod
    def concat(parts: list["Predictions"]) -> "Predictions":
        parts = [p for p in parts if len(p.utterance_ids)]
        return Predictions([u for p in parts for u in p.utterance_ids], np.concatenate([p.labels for p in parts]),
                           np.concatenate([p.logits for p in parts]), np.concatenate([p.embeddings for p in parts]))


@dataclass
class FitResult:
    best_epoch: int
    best_validation_wf1: float
    history: list = field(default_factory=list)  # per epoch: train_loss, validation_wf1, seconds
    seconds_per_epoch: float = 0.0
    optimizer_steps: int = 0


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[dict], device, desc: str = "predict",
            precision: str = "fp32") -> Predictions:
    """Run the model over batches; gather logits and embeddings of the real utterances only (as float32)."""
    device = torch.device(device)
    model.eval()
    ids, labels, logits, embeddings = [], [], [], []
    for batch in progress(batches, desc=desc):
        with _autocast(device, precision):
            out = model(**_to(batch["inputs"], device))
        lab = batch["labels"]
        mask = batch.get("mask", torch.ones_like(lab, dtype=torch.bool))
        logits.append(out.logits[mask.to(device)].float().cpu())        # (n_real, C)
        embeddings.append(out.embeddings[mask.to(device)].float().cpu())  # (n_real, D)
        labels.append(lab[mask])
        ids.extend(batch["utterance_ids"])
    if not ids:
        return Predictions([], np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
    return Predictions(ids, torch.cat(labels).numpy(), torch.cat(logits).numpy(), torch.cat(embeddings).numpy())


# ------------------------------------------------------------------------------------------------ the loop
SchedulerFactory = Callable[[torch.optim.Optimizer, int], object]  # (optimizer, total optimiser steps) -> scheduler
# (model output, batch, device) -> (loss summed over the batch's real items, {name: summed part, for logs})
LossFn = Callable[[object, dict, torch.device], tuple[torch.Tensor, dict]]
_CROSS_ENTROPY = nn.CrossEntropyLoss(ignore_index=IGNORE, reduction="sum")


def classification_loss(out, batch: dict, device) -> tuple[torch.Tensor, dict]:
    """Cross-entropy summed over the labelled items (unlabelled ones carry IGNORE), on fp32 logits."""
    logits = out.logits.float()
    return _CROSS_ENTROPY(logits.reshape(-1, logits.shape[-1]), batch["labels"].to(device).reshape(-1)), {}


class Trainer:
    """Trains one model with the settings of a :class:`TrainerConfig` on this process' device(s)."""

    def __init__(self, cfg: TrainerConfig, device: str | torch.device = "auto", desc: str = "train"):
        self.cfg, self.desc = cfg, desc
        self.dist = Distributed.current()
        # several processes: each uses the device Accelerate gave it (its own GPU), whatever "auto" says
        self.device = self.dist.device if self.dist.world > 1 else resolve_device(str(device))

    def predict(self, model: nn.Module, batches: list[dict], desc: str | None = None) -> Predictions:
        """Predictions on every process for all ``batches``: each process predicts every world-th batch and the
        parts are gathered (so that scores are computed on the whole split)."""
        mine = batches[self.dist.rank::self.dist.world]
        local = predict(model, mine, self.device, desc or f"{self.desc} predict", self.cfg.precision)
        return Predictions.concat(self.dist.gather(local)) if self.dist.world > 1 else local

    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module the optimiser steps through: DistributedDataParallel (via Accelerate) on several processes."""
        if self.dist.world == 1:
            return model
        from accelerate import Accelerator, DistributedDataParallelKwargs

        # find_unused_parameters: a Hugging Face encoder's pooler takes no part in the loss
        accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        return accelerator.prepare_model(model)

    def step(self, net: nn.Module, model: nn.Module, group: list[dict], n: int, loss_of: "LossFn",
             optimizer: torch.optim.Optimizer, scaler, sched=None) -> tuple[torch.Tensor, dict]:
        """One optimiser step over ``group`` (``accumulate`` global batches) whose loss is summed over its ``n``
        real items (all processes) and divided by ``n``: the same gradient however the step is split into
        batches and processes. ``loss_of(out, batch, device) -> (summed loss, {name: summed part})``. Returns this
        process' summed loss and parts, on the device (no host sync)."""
        cfg, dev, dist = self.cfg, self.device, self.dist
        total, parts = torch.zeros((), device=dev), {}
        for j, batch in enumerate(group):
            last = j == len(group) - 1
            if dist.world > 1:
                batch = shard(batch, dist.rank, dist.world)
            # DDP averages gradients over processes: scale by world so that the result is sum / n
            sync = contextlib.nullcontext() if last or dist.world == 1 else net.no_sync()
            with sync:
                with _autocast(dev, cfg.precision):
                    out = net(**_to(batch["inputs"], dev))
                loss, named = loss_of(out, batch, dev)
                scaler.scale(loss * (dist.world / n)).backward()
            total += loss.detach()
            for k, v in named.items():
                parts[k] = parts.get(k, 0) + v.detach()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        return total, parts

    def fit(self, model: nn.Module, train_batches: Callable[[int], Iterable[dict]],
            validation_batches: Callable[[], list[dict]], optimizer: torch.optim.Optimizer,
            scheduler: SchedulerFactory | None = None, resume: Path | None = None) -> FitResult:
        """Train ``model`` in place and leave it holding the weights of the best validation epoch.

        train_batches(epoch) returns that epoch's (shuffled) global batches; validation_batches() the validation
        ones. The scheduler is built once the number of optimiser steps is known and stepped once per step.

        resume: a directory for the state after every epoch (weights, best weights, optimiser, scheduler, scaler,
        RNG, history; written atomically, removed at the end). A call that finds it goes on after the last saved
        epoch, so a killed hour-long Stage I loses at most one epoch, and ends with the weights an uninterrupted
        run gives: the epochs already done are replayed through ``train_batches`` (to advance its shuffling RNG)
        without training.
        """
        cfg, dev, dist = self.cfg, self.device, self.dist
        model.to(dev)
        net = self._wrap(model)
        scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
        sched, steps = None, 0
        best_state, best_wf1, best_epoch, stale = None, -1.0, -1, 0
        history, seconds = [], []
        saved = _load_epochs(resume) if resume is not None else None
        for epoch in range(cfg.epochs):
            if saved is not None and epoch < saved["epoch"]:  # done before the kill: only advance the shuffling
                batches = list(train_batches(epoch))
                if scheduler is not None and sched is None:
                    sched = scheduler(optimizer, cfg.epochs * len(self._groups(batches)))
                if epoch == saved["epoch"] - 1:
                    steps, best_wf1, best_epoch, stale, history, seconds, best_state = _restore_epochs(
                        saved, model, optimizer, sched, scaler, dev)
                    log.info("%s: resuming after epoch %d from %s", self.desc, epoch + 1, resume)
                    if stale >= cfg.patience:
                        break
                continue
            start = time.perf_counter()
            model.train()
            batches = list(train_batches(epoch))
            groups = self._groups(batches)
            if scheduler is not None and sched is None:
                sched = scheduler(optimizer, cfg.epochs * len(groups))
            total = torch.zeros((), device=dev)  # summed loss of the epoch, kept on the device: no per-step sync
            count = 0
            bar = progress(groups, desc=f"{self.desc} epoch {epoch + 1}/{cfg.epochs}")
            for g, group in enumerate(bar):
                # the real utterances of the whole step over all processes: known on the host, before sharding
                n = sum(int((b["labels"] != IGNORE).sum()) for b in group)
                if n == 0:
                    continue
                total += self.step(net, model, group, n, classification_loss, optimizer, scaler, sched)[0]
                count += n
                steps += 1
                if g % 50 == 49:  # a host sync now and then, for the progress bar only
                    bar.set_postfix(loss=f"{float(total) * dist.world / max(count, 1):.4f}")
            train_seconds = time.perf_counter() - start
            # this process' summed loss over its shards; all of them: the mean over the real utterances
            epoch_loss = sum(dist.gather(float(total))) / max(count, 1)
            pred = self.predict(model, validation_batches(), f"{self.desc} validation")
            wf1 = weighted_f1(pred.labels, pred.predicted)
            seconds.append(train_seconds)
            history.append({"epoch": epoch + 1, "train_loss": epoch_loss, "validation_wf1": wf1,
                            "train_seconds": train_seconds})
            log.info("%s epoch %d: loss %.4f, validation wF1 %.4f (%.1fs)", self.desc, epoch + 1, epoch_loss, wf1,
                     train_seconds)
            if wf1 > best_wf1:
                best_wf1, best_epoch, stale = wf1, epoch + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            else:
                stale += 1
            if resume is not None and epoch + 1 < cfg.epochs and stale < cfg.patience:
                if dist.is_main:
                    _save_epochs(resume, {"epoch": epoch + 1, "steps": steps, "best_wf1": best_wf1,
                                          "best_epoch": best_epoch, "stale": stale, "history": history,
                                          "seconds": seconds}, model, best_state, optimizer, sched, scaler)
                dist.barrier()
            if stale >= cfg.patience:
                log.info("%s: early stop after epoch %d (best %d)", self.desc, epoch + 1, best_epoch)
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        if resume is not None and dist.is_main:
            shutil.rmtree(resume, ignore_errors=True)  # the stage saves the trained model itself
        return FitResult(best_epoch, best_wf1, history, float(np.mean(seconds)) if seconds else 0.0, steps)

    def _groups(self, batches: list[dict]) -> list[list[dict]]:
        """An epoch's batches as optimiser steps of ``accumulate`` batches each."""
        if self.dist.world > 1:  # every process needs a non-empty shard of every batch it steps on
            batches = [b for b in batches if len(b["labels"]) >= self.dist.world]
        return [batches[i:i + self.cfg.accumulate] for i in range(0, len(batches), self.cfg.accumulate)]


# ------------------------------------------------------------------------------------------------ epoch state
EPOCH_STATE = "epoch_state.pt"   # optimiser, scheduler, scaler, RNG, counters, history (tensors + plain data)
EPOCH_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"


def _save_epochs(directory: Path, counters: dict, model, best_state, optimizer, sched, scaler) -> None:
    """The loop's state after an epoch, written beside the previous one and swapped in (never half of one)."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp / EPOCH_WEIGHTS))
        if best_state is not None:
            save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / BEST_WEIGHTS))
        torch.save({**counters, "optimizer": optimizer.state_dict(),
                    "scheduler": sched.state_dict() if sched else None, "scaler": scaler.state_dict(),
                    "rng": _rng_state()}, tmp / EPOCH_STATE)

    _swap_in(Path(directory), write)
    kill_point("trainer.epoch_saved")


def _load_epochs(directory: Path) -> dict | None:
    for candidate in (directory, directory.with_name(directory.name + ".old")):  # .old: killed mid-swap
        if (candidate / EPOCH_STATE).is_file() and (candidate / EPOCH_WEIGHTS).is_file():
            state = torch.load(candidate / EPOCH_STATE, map_location="cpu", weights_only=True)
            return {**state, "directory": candidate}
    return None


def _restore_epochs(saved: dict, model, optimizer, sched, scaler, device):
    from merits.errors import load_safetensors

    where = saved["directory"]
    model.load_state_dict(load_safetensors(where / EPOCH_WEIGHTS, "pt", "delete it to start over"))
    model.to(device)
    best = where / BEST_WEIGHTS
    best_state = load_safetensors(best, "pt", "delete it to start over") if best.is_file() else None
    optimizer.load_state_dict(saved["optimizer"])
    if sched is not None and saved["scheduler"] is not None:
        sched.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    _set_rng_state(saved["rng"])
    return (int(saved["steps"]), float(saved["best_wf1"]), int(saved["best_epoch"]), int(saved["stale"]),
            list(saved["history"]), list(saved["seconds"]), best_state)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])


def _swap_in(directory: Path, write: Callable[[Path], None]) -> None:
    """Write a checkpoint directory under a temporary name, then swap it for the old one: a kill at any moment
    leaves the previous checkpoint or this one (``<dir>.old`` while swapping), never half of one."""
    tmp = directory.with_name(directory.name + ".saving")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ step-based
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
    net = trainer._wrap(model)
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
                    "rng": _rng_state(), "history": history}, tmp / STEP_STATE)

    _swap_in(directory, write)
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
            _set_rng_state(state["rng"])
            model.to(device)
            log.info("resuming at step %d from %s", state["step"], candidate)
            return int(state["step"]), list(state["history"])
    return 0, []


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


__all__ = ["Distributed", "alone", "FitResult", "IGNORE", "Predictions", "Trainer", "TrainerConfig", "linear_warmup", "predict",
           "progress", "resolve_device", "seed_everything", "shard"]
