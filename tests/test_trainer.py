"""The one Trainer on real-hardware settings, checked on CPU: gradient accumulation equals one big batch, two
data-parallel processes (gloo) equal one process with the same global batch, mixed precision trains, the scheduler
is built from the step count the loop knows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from merits.training import Trainer, TrainerConfig, linear_warmup

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from trainer_fixtures import conversation_data, global_batches, tiny_model, train_steps  # noqa: E402


def test_accumulation_equals_one_big_batch():
    """4 batches of 3 conversations with accumulate=4 give the weights of one batch of 12 after one optimiser step:
    the loss is summed over real utterances and divided by their count over the whole step (the batches hold
    different numbers of real, labelled utterances, so a mean of per-batch means would differ)."""
    feats, labels, lengths = conversation_data(12, seed=1)
    small = global_batches(feats, labels, lengths, 3)
    big = global_batches(feats, labels, lengths, 12)
    assert len(small) == 4 and len(big) == 1
    counts = [int((b["labels"] != -100).sum()) for b in small]
    assert len(set(counts)) > 1  # unequal: the test would pass with per-batch means otherwise
    accumulated = train_steps(small, TrainerConfig(epochs=1, patience=1, accumulate=4, lr=1e-2))[0]
    one = train_steps(big, TrainerConfig(epochs=1, patience=1, accumulate=1, lr=1e-2))[0]
    diff = max((accumulated[k] - one[k]).abs().max().item() for k in one)
    assert diff < 1e-5
    # and accumulation really changed something: one step on the first small batch alone differs
    first = train_steps(small[:1], TrainerConfig(epochs=1, patience=1, lr=1e-2))[0]
    assert max((first[k] - one[k]).abs().max().item() for k in one) > 1e-4


def test_two_processes_equal_one(tmp_path):
    """Data-parallel training through Accelerate on 2 CPU processes (gloo): each global batch sharded, gradients
    all-reduced, validation gathered; the weights after 3 steps equal those of 1 process with the same batches."""
    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MERITS_QUIET": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
           str(HERE / "trainer_fixtures.py"), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    ddp = load_file(str(out))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["world"] == 2 and meta["validation_n"] == meta["validation_expected"]  # gathered: the whole split
    feats, labels, lengths = conversation_data(16, seed=2)
    single = train_steps(global_batches(feats, labels, lengths, 4)[:3], TrainerConfig(epochs=1, patience=1, lr=1e-2),
                         validation=global_batches(feats, labels, lengths, 4)[3:])[0]
    assert max((ddp[k] - single[k]).abs().max().item() for k in single) < 1e-5


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(precision):
    """Autocast (and, for fp16, the GradScaler unscaled before clipping) lowers the loss like fp32 does."""
    feats, labels, lengths = conversation_data(24, seed=3)
    batches = global_batches(feats, labels, lengths, 4)
    torch.manual_seed(0)
    model = tiny_model()
    trainer = Trainer(TrainerConfig(epochs=6, patience=6, lr=1e-2, precision=precision), "cpu")
    result = trainer.fit(model, lambda e: batches, lambda: batches, torch.optim.AdamW(model.parameters(), lr=1e-2))
    losses = [h["train_loss"] for h in result.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32; only compute is cast


def test_scheduler_gets_the_loops_step_count():
    """The loop builds the scheduler once it knows how many optimiser steps there will be (batches / accumulate)."""
    feats, labels, lengths = conversation_data(10, seed=4)
    batches = global_batches(feats, labels, lengths, 2)  # 5 batches
    seen = {}

    def factory(optimizer, total):
        seen["total"] = total
        return linear_warmup(0.1)(optimizer, total)

    model = tiny_model()
    result = Trainer(TrainerConfig(epochs=3, patience=3, accumulate=2), "cpu").fit(
        model, lambda e: batches, lambda: batches, torch.optim.AdamW(model.parameters()), factory)
    assert seen["total"] == 3 * 3 and result.optimizer_steps == 9  # ceil(5 / 2) steps per epoch


def test_trainer_config_errors_name_the_key():
    from merits.experiment import load_experiment
    from merits.errors import ConfigError

    with pytest.raises(ConfigError, match="stage1_text.precision"):
        load_experiment("offline", ["stage1_text.precision=fp8"])
    with pytest.raises(ConfigError, match="stage2_text.accumulate must be >= 1"):
        load_experiment("offline", ["stage2_text.accumulate=0"])


def test_merits_train_under_torchrun(tmp_path, tiny_encoder):
    """`torchrun --nproc_per_node 2 -m merits train ...`: Stage I text trains data-parallel (gloo), the conversation
    stage runs on rank 0 while rank 1 waits, rank 0 writes every output once, and the run replays like any other."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MERITS_QUIET": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29732", "-m",
           "merits", "-q", "train", "offline", "data.max_conversations=3", "data.options.strict_counts=false",
           "stage1_text.epochs=1", "stage2_text.epochs=2", "seeds=[0]", f"text_encoder.model={tiny_encoder}",
           f"runs_dir={tmp_path}", "name=ddp"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| Modality (stage) |") == 1  # Table I printed once, by rank 0
    run = tmp_path / "ddp"
    for stage in ("stage1_text", "stage2_text"):
        assert (run / stage / "seed-0" / "done.json").is_file() and not (run / stage / "seed-0.partial").exists()
    from merits.data.manifest import Manifest
    from merits.predict import TrainedRun, predict_run

    manifest = Manifest.load(run / "manifest")
    m = json.loads((run / "stage1_text" / "seed-0" / "metrics.json").read_text())
    assert m["validation"]["n"] == int((manifest.table["split"] == "validation").sum())
    replay = predict_run(TrainedRun.open(run), manifest.select(manifest.split("test")["utterance_id"]), tmp_path / "p")
    assert replay.summary["scores"]["stage2_text"]["test"]["weighted_f1"] == pytest.approx(
        json.loads((run / "stage2_text" / "seed-0" / "metrics.json").read_text())["test"]["weighted_f1"], abs=1e-9)


@pytest.mark.parametrize("where", ["after an epoch", "inside an epoch"])
def test_a_killed_fit_resumes_where_it_stopped(tmp_path, monkeypatch, where):
    """The loop's state is saved after every epoch and, inside one, every checkpoint_seconds (weights, best weights,
    AdamW, warm-up scheduler, RNG, the epoch's loss so far, history); a fit killed at its second save and started
    again goes on from there (after epoch 2 of 5, or after 20 of epoch 1's 30 steps) and ends with the weights,
    history and best epoch of an uninterrupted fit (dropout on, shuffled batches: the replayed epochs advance the
    shuffling RNG, the cut epoch skips the steps it had made)."""
    import merits.training.loop as training
    from merits.models.context import ConversationModel, ConversationModelConfig

    feats, labels, lengths = conversation_data(60, seed=5)
    cfg = TrainerConfig(epochs=5, patience=5, lr=1e-2)
    seconds = 1e9 if where == "after an epoch" else 0.0  # 0: save at every look at the clock (each 10 steps)

    def fit(resume, die_after=None):
        torch.manual_seed(0)
        model = ConversationModel(ConversationModelConfig(input_dim=8, num_classes=3, hidden=4, heads=2, dropout=0.3))
        rng = np.random.default_rng(0)

        def train(epoch):
            order = rng.permutation(len(lengths))
            return global_batches(feats[order], labels[order], lengths[order], 2)  # 30 steps an epoch

        if die_after is not None:
            calls = []

            def kill(name):
                if name == "trainer.epoch_saved":
                    calls.append(name)
                    if len(calls) == die_after:
                        raise KeyboardInterrupt  # the process dies here
            monkeypatch.setattr(training, "kill_point", kill)
        validated = []

        def validation():
            validated.append(1)  # once per epoch trained
            return global_batches(feats, labels, lengths, 8)

        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        result = Trainer(cfg, "cpu").fit(model, train, validation, optimizer, linear_warmup(0.2), resume=resume,
                                         checkpoint_seconds=seconds)
        monkeypatch.setattr(training, "kill_point", lambda name: None)
        result.trained_epochs = len(validated)
        return model.state_dict(), result

    whole, expected = fit(None)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "epochs", die_after=2)
    assert (tmp_path / "epochs" / training.EPOCH_STATE).is_file()
    stepped = []
    real_step = Trainer.step
    monkeypatch.setattr(Trainer, "step", lambda self, *a, **k: stepped.append(1) or real_step(self, *a, **k))
    resumed, got = fit(tmp_path / "epochs")
    assert max((whole[k] - resumed[k]).abs().max().item() for k in whole) < 1e-6
    assert expected.trained_epochs == 5 and expected.optimizer_steps == 150
    # really went on from the saved state: after 2 epochs (60 steps) or after 20 steps of the first
    assert len(stepped) == (90 if where == "after an epoch" else 130)
    assert got.trained_epochs == (3 if where == "after an epoch" else 5)
    assert got.best_epoch == expected.best_epoch and got.optimizer_steps == expected.optimizer_steps
    assert [h["train_loss"] for h in got.history] == pytest.approx([h["train_loss"] for h in expected.history])
    assert not (tmp_path / "epochs").exists()  # removed once the fit is over: the stage saves its model itself


def test_a_resumed_stage_says_when_it_had_nothing_saved(tmp_path, caplog):
    """After a kill before the loop's first save, the rerun says training starts at epoch 1 (not a bare
    'resuming'); a fresh computation says nothing of the kind."""
    import logging

    from merits.models.context import ConversationModel, ConversationModelConfig

    feats, labels, lengths = conversation_data(8, seed=1)
    for marked in (False, True):
        partial = tmp_path / f"stage-{marked}.partial"
        partial.mkdir()
        if marked:
            (partial / ".resumed").touch()  # what runs.run_cached leaves when it continues a killed computation
        model = ConversationModel(ConversationModelConfig(input_dim=8, num_classes=3, hidden=4, heads=2))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="merits"):
            Trainer(TrainerConfig(epochs=1), "cpu").fit(
                model, lambda e: global_batches(feats, labels, lengths, 4), lambda: global_batches(feats, labels, lengths, 4),
                torch.optim.AdamW(model.parameters()), resume=partial / "epochs")
        said = "no saved training state" in caplog.text and "training starts at epoch 1" in caplog.text
        assert said == marked
