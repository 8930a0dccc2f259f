"""Training: the one loop (:mod:`.loop`), step-based pretraining (:mod:`.steps`), prediction (:mod:`.prediction`),
the optimiser and schedule (:mod:`.optim`) and resumable state on disk (:mod:`.checkpoint`). Which process and which
device live in :mod:`merits.distributed` and :mod:`merits.runtime`."""

from merits.training.loop import IGNORE, FitResult, LossFn, SchedulerFactory, Trainer, TrainerConfig, classification_loss
from merits.training.optim import adamw, linear_warmup
from merits.training.prediction import PRECISIONS, Predictions, predict
from merits.training.steps import fit_steps

__all__ = ["FitResult", "IGNORE", "LossFn", "PRECISIONS", "Predictions", "SchedulerFactory", "Trainer", "TrainerConfig",
           "adamw", "classification_loss", "fit_steps", "linear_warmup", "predict"]
