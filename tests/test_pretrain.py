"""Pretraining on pseudo-labels ("RoBERTa-FT") and Stage I text starting from its checkpoint, on real MELD text."""

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from merits.cli import main
from merits.config import load_config
from merits.experiment import load_experiment
from merits.pretrain import PretrainConfig
from merits.data import prepare
from merits.data.manifest import Manifest
from merits.errors import ConfigError, DataError
from merits.models.utterance import TextClassifier, TextClassifierConfig
from merits.pipeline import run_experiment
from merits.pretrain.finetune import ENCODER, pretrain, pseudo_labelled
from merits.teach import VaderTeacher

LABELS = ["negative", "neutral", "positive"]


def unlabelled_meld(n: int) -> Manifest:
    """The first n MELD training utterances as an unlabelled corpus (labels dropped: teachers supply them)."""
    t = prepare("meld").split("train").head(n).copy()
    t["label"] = ""
    return Manifest("meld-unlabelled", tuple(LABELS), t).validate()


def with_labels(manifest: Manifest, labels) -> Manifest:
    t = manifest.table.copy()
    t["label"] = list(labels)
    return Manifest(manifest.corpus, tuple(LABELS), t)


def vader_labels(texts) -> list[str]:
    """The VADER teacher's answers: a real, non-human labeller."""
    return [a.label for a in VaderTeacher().label(list(texts))]


def test_pseudo_labelled_split_and_invalid_answers():
    m = unlabelled_meld(200)
    labels = vader_labels(m.table["text"])
    labels[:7] = [""] * 7  # the teacher's invalid answers: left out, counted
    data, dropped = pseudo_labelled(with_labels(m, labels), PretrainConfig(seed=3))
    assert dropped == {"no_label": 7, "empty_text": 0} and len(data.table) == 193
    share = (data.table["split"] == "validation").mean()
    assert 0.1 < share < 0.3  # random 80/20 by utterance
    assert (data.table["conversation_id"] == data.table["utterance_id"]).all()
    again, _ = pseudo_labelled(with_labels(m, labels), PretrainConfig(seed=3))
    assert again.table["split"].tolist() == data.table["split"].tolist()  # seeded


def test_pseudo_labels_outside_the_classes_are_an_error():
    m = unlabelled_meld(20)
    with pytest.raises(DataError, match="joy"):
        pseudo_labelled(with_labels(m, ["joy"] + ["neutral"] * 19), PretrainConfig())
    with pytest.raises(DataError, match="at least 10"):
        pseudo_labelled(with_labels(m, ["neutral"] * 5 + [""] * 15), PretrainConfig())
    with pytest.raises(ConfigError, match="validation_fraction"):
        load_config(None, ["validation_fraction=1.5"], cls=PretrainConfig)


def test_pretrain_then_stage1_starts_from_the_checkpoint(tmp_path, tiny_encoder):
    m = unlabelled_meld(120)
    labelled = with_labels(m, vader_labels(m.table["text"]))
    labelled.save(tmp_path / "labelled")
    out = tmp_path / "ft"
    cfg = load_config(None, [f"text_encoder.model={tiny_encoder}", "train.epochs=2", "train.batch_size=16",
                             "train.lr=1e-3", "device=cpu"], cls=PretrainConfig)
    metrics = pretrain(Manifest.load(tmp_path / "labelled"), out, cfg)
    assert metrics["utterances"]["train"] + metrics["utterances"]["validation"] == 120
    assert 0.0 <= metrics["validation"]["weighted_f1"] <= 1.0 and len(metrics["history"]) >= 1
    assert set(pd.read_csv(out / "split.csv")["split"]) == {"train", "validation"}
    tuned = load_file(str(out / ENCODER / "model.safetensors"))
    start = load_file(f"{tiny_encoder}/model.safetensors")
    assert any(not torch.equal(tuned[k], start[k]) for k in start)  # pretraining changed the encoder

    # Stage I text built on the pretrained path starts from exactly those weights
    model = TextClassifier(TextClassifierConfig(str(out / ENCODER), 7, tuple("abcdefg")))
    state = model.encoder.state_dict()
    assert all(torch.equal(state[k], tuned[k]) for k in tuned if k in state)

    # ... and the whole Stage I -> II run accepts it as its text encoder
    run = load_experiment("offline", ["data.max_conversations=3", "data.options.strict_counts=false", "stage1_text.epochs=1",
                                      "stage2_text.epochs=1", "seeds=[0]", f"text_encoder.model={out / ENCODER}",
                                      f"runs_dir={tmp_path / 'runs'}", "name=from-ft"])
    assert "| Text I |" in run_experiment(run)["table"]

    # a rerun with the same labels and config is skipped; a foreign --out directory is refused
    assert pretrain(Manifest.load(tmp_path / "labelled"), out, cfg)["stage_seconds"] == metrics["stage_seconds"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a pretraining output"):
        pretrain(labelled, tmp_path / "other", cfg)
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"


def test_cli_pretrain(tmp_path, tiny_encoder, capsys):
    m = unlabelled_meld(40)
    with_labels(m, vader_labels(m.table["text"])).save(tmp_path / "labelled")
    assert main(["-q", "pretrain", str(tmp_path / "labelled"), "--out", str(tmp_path / "ft"),
                 f"text_encoder.model={tiny_encoder}", "train.epochs=1", "device=cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"text_encoder.model={tmp_path / 'ft' / ENCODER}" in printed
    assert json.loads((tmp_path / "ft" / "metrics.json").read_text())["utterances"]["train"] > 0
    assert main(["-q", "pretrain", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_pretrain_on_two_processes_matches_one(tmp_path, tiny_encoder):
    """`torchrun --nproc_per_node 2 -m merits pretrain ...` (gloo, the Trainer's Accelerate support): each global
    batch is sharded over the processes, rank 0 reports and writes once, and the encoder equals a one-process run's
    (dropout off, so the only difference is the order of float sums)."""
    import os
    import subprocess
    import sys

    from transformers import AutoConfig, AutoModel, AutoTokenizer

    still = tmp_path / "tiny-no-dropout"  # the tiny encoder without dropout: both runs draw the same numbers
    config = AutoConfig.from_pretrained(tiny_encoder, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    AutoModel.from_pretrained(tiny_encoder, config=config).save_pretrained(still)
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(still)
    m = unlabelled_meld(48)
    with_labels(m, vader_labels(m.table["text"])).save(tmp_path / "labelled")
    common = ["-m", "merits", "-q", "pretrain", str(tmp_path / "labelled"), f"text_encoder.model={still}",
              "train.epochs=2", "train.batch_size=8", "train.dropout=0.0", "train.lr=1e-3", "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MERITS_QUIET": "1"}
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29736", *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("pretrained on ") == 1  # rank 0 reports
    a = load_file(str(tmp_path / "one" / ENCODER / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / ENCODER / "model.safetensors"))
    start = load_file(f"{still}/model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in start)  # it trained
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert ma["utterances"] == mb["utterances"]
    assert mb["validation"]["weighted_f1"] == pytest.approx(ma["validation"]["weighted_f1"], abs=1e-6)
