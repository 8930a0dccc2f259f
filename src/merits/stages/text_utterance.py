"""Stage I text: fine-tune the text encoder + a head per utterance; export the utterance embeddings.

The stage writes into its directory: checkpoint/ (rebuilds the model alone; stage.json holds the tokeniser's max
length and the batch size), embeddings.safetensors (pooled final-layer embedding + logits of every utterance, keyed
by id), predictions.csv, metrics.json, confusion_test.png. Model selection uses validation weighted F1 only.

It trains data-parallel when started on several processes (``accelerate launch -m merits train ...``): each
global batch is sharded, validation predictions are gathered, and only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from merits.config import TextEncoderConfig
from merits.data.manifest import Manifest
from merits.encoders.text import TextBatcher, describe
from merits.encoders.text_context import EncodedTurns, TextContextConfig, encode_turns, has_speakers
from merits.errors import ConfigError, read_json
from merits.faults import kill_point
from merits.models.utterance import TextClassifier, TextClassifierConfig
from merits.stages.base import STAGE_FILE, Replay, Stage, register_stage, save_stage_info
from merits.stages.common import export, fit_summary, splits_present
from merits.training import IGNORE, FitResult, Trainer, TrainerConfig, adamw, linear_warmup, predict

log = logging.getLogger("merits")
TRAINED = "trained.json"  # in a stage directory being computed: training finished, the checkpoint is saved


@dataclass
class Stage1TextConfig(TrainerConfig):
    epochs: int = 4
    batch_size: int = 32                       # utterances per global batch (over all processes)
    lr: float = 5e-5                           # encoder learning rate (AdamW)
    head_lr: float = 1e-3                      # classification head learning rate
    weight_decay: float = 0.01                 # AdamW weight decay
    warmup_ratio: float = 0.1                  # linear warm-up then linear decay
    dropout: float = 0.1                       # before the classification head
    patience: int = 2
    eval_batch_size: int = 128                 # utterances per forward pass when exporting embeddings
    # not in the paper: the turns around each utterance inside the encoder (merits.encoders.text_context);
    # the default (no past, no future, no speakers) is the paper's utterance-only Stage I
    context: TextContextConfig = field(default_factory=TextContextConfig)


def utterance_batches(batcher: TextBatcher, manifest: Manifest, encoded: EncodedTurns, rows: np.ndarray,
                      batch_size: int, rng: np.random.Generator | None = None) -> list[dict]:
    """Batches of the given manifest rows (``encoded``: every row's token ids, see :func:`text_inputs`). Training
    (rng given): shuffled, then sorted by length inside pools of 50 batches, so that each batch pads little but the
    batch order stays random. Evaluation: sorted by length. Inputs read in a conversation window carry
    ``pool_mask``, the row's own turn."""
    lengths, token_ids, spans = encoded.lengths, encoded.ids, encoded.spans
    if rng is None:
        groups = [rows[np.argsort(lengths[rows], kind="stable")]]
    else:
        rows = rng.permutation(rows)
        pool = batch_size * 50
        groups = [p[np.argsort(lengths[p], kind="stable")] for p in np.split(rows, range(pool, len(rows), pool))]
    chunks = [g[i:i + batch_size] for g in groups for i in range(0, len(g), batch_size)]
    if rng is not None:
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    labels = manifest.label_ids()
    ids = manifest.table["utterance_id"].to_numpy()
    return [{"inputs": batcher.pad([token_ids[i] for i in c], None if spans is None else [spans[i] for i in c]),
             "labels": torch.as_tensor(np.where(labels[c] >= 0, labels[c], IGNORE)),
             "utterance_ids": list(ids[c])} for c in chunks]


def rows_of(manifest: Manifest, split: str) -> np.ndarray:
    return np.flatnonzero(manifest.table["split"].to_numpy() == split)


def labelled_rows(manifest: Manifest, split: str) -> np.ndarray:
    """The rows of ``split`` that carry a label: what Stage I trains on (unlabelled turns are context only)."""
    return np.flatnonzero((manifest.table["split"].to_numpy() == split) & (manifest.label_ids() >= 0))


@dataclass
class FineTuned:
    model: TextClassifier
    result: FitResult
    trainer: Trainer
    batches: Callable[[str], list[dict]]  # split -> evaluation batches of that split's utterances
    inputs: EncodedTurns                  # every manifest row's token ids, as the encoder read them


def fine_tune(encoder: TextEncoderConfig, sc: Stage1TextConfig, manifest: Manifest, seed: int, runtime="auto",
              desc: str = "Stage I text", resume: Path | None = None) -> FineTuned:
    """Fine-tune ``encoder`` + a linear head on the manifest's train split, selecting the epoch on its validation
    split (weighted F1). Used by Stage I text and by the pseudo-label pretraining ("RoBERTa-FT"). ``resume``: where
    the loop keeps its state after every epoch, so that a killed run goes on from its last epoch."""
    model = TextClassifier(TextClassifierConfig(encoder.model, len(manifest.labels), tuple(manifest.labels),
                                                encoder.pooling, sc.dropout))
    log.info("%s on %d utterances: %s", desc, len(manifest.table), describe(model.encoder))
    batcher = TextBatcher(model.tokenizer, encoder.max_length)
    encoded = text_inputs(batcher, manifest, sc.context, desc)  # once; every epoch's batches only pad
    # the encoder at lr (no decay on biases / LayerNorm), the head at head_lr
    optimizer = adamw(model, sc.head_lr, sc.weight_decay, encoder=model.encoder, encoder_lr=sc.lr)
    rng = np.random.default_rng(seed)

    def batches(rows, size, shuffle=None):
        return utterance_batches(batcher, manifest, encoded, rows, size, shuffle)

    validation = batches(rows_of(manifest, "validation"), sc.eval_batch_size)
    trainer = Trainer(sc, runtime, desc)
    result = trainer.fit(model, lambda epoch: batches(labelled_rows(manifest, "train"), sc.batch_size, rng), lambda: validation,
                         optimizer, scheduler=linear_warmup(sc.warmup_ratio), resume=resume)
    return FineTuned(model, result, trainer, lambda split: batches(rows_of(manifest, split), sc.eval_batch_size),
                     encoded)


def text_inputs(batcher: TextBatcher, manifest: Manifest, context: TextContextConfig | None,
                desc: str = "Stage I text") -> EncodedTurns:
    """Every manifest row's encoder input: the utterance alone, or (``context`` enabled) its conversation window
    (:mod:`merits.encoders.text_context`). Says what it reads, and when speakers were asked for but are unknown."""
    encoded = encode_turns(batcher.tokenizer, manifest.table, context, batcher.max_length)
    if context is not None and context.enabled:
        if context.speakers and not has_speakers(manifest.table):
            log.warning("%s: context.speakers is set but %r names no speakers (no speaker column): turns are read "
                        "without names", desc, manifest.corpus)
        log.info("%s reads each utterance in its conversation (%s): %.0f tokens on average, at most %d (max_tokens %d)",
                 desc, context.describe(), encoded.lengths.mean(), encoded.lengths.max(), context.max_tokens)
    return encoded


@dataclass
class TextSettings:
    """What Stage I text reads of the experiment: the encoder (model, tokens, pooling) and its training section."""

    encoder: TextEncoderConfig
    train: Stage1TextConfig


@dataclass
class TextReplay(Replay):
    max_length: int = 128                 # the tokeniser's limit per turn
    context: dict | None = None           # the conversation window it read (TextContextConfig fields); None: alone

    def window(self, online: bool = False) -> TextContextConfig | None:
        """The context it was trained with (None: utterance only); online, without the future turns."""
        if not self.context:
            return None
        context = TextContextConfig(**self.context)
        return context.causal() if online else context


@register_stage
class TextUtteranceStage(Stage):
    kind = "text_utterance"
    level = "utterance"
    replay_type = TextReplay
    distributed = True  # every process trains; rank 0 exports

    def settings(self, cfg) -> TextSettings:
        return TextSettings(cfg.text_encoder, cfg.stage1_text)

    def key_parts(self, s: TextSettings, data) -> tuple:
        return ("text", data.manifest(self).fingerprint(), s.encoder, s.train)

    def check(self, s: TextSettings) -> None:
        if s.encoder.pooling not in ("mean", "cls"):
            raise ConfigError(f"text_encoder.pooling: {s.encoder.pooling!r} is not mean | cls")

    def train(self, s: TextSettings, data, inputs, seed: int, out: Path, runtime) -> dict:
        sc, manifest = s.train, data.manifest(self)
        trained = out / TRAINED
        if trained.is_file() and (out / "checkpoint" / STAGE_FILE).is_file():
            # killed after training, during the exports: the saved checkpoint is the trained model (minutes with
            # MiniLM, hours with roberta-large), so only the exports run again
            log.info("%s: resuming from the trained checkpoint in %s (only the exports run again)", self.label,
                     out / "checkpoint")
            model, summary = TextClassifier.load(out / "checkpoint"), read_json(trained)
            trainer = Trainer(sc, runtime, self.label)
            if not trainer.dist.is_main:
                return {}
            batcher = TextBatcher(model.tokenizer, s.encoder.max_length)
            encoded = text_inputs(batcher, manifest, sc.context, self.label)
            split_batches = lambda split: utterance_batches(batcher, manifest, encoded, rows_of(manifest, split),  # noqa: E731
                                                            sc.eval_batch_size)
        else:
            # the loop's state after each epoch lives in the stage's .partial directory: a run killed mid-stage
            # (an hour per seed with context on 2 cores) resumes after its last finished epoch
            tuned = fine_tune(s.encoder, sc, manifest, seed, runtime, self.label, out / "epochs")
            trainer, model, summary = tuned.trainer, tuned.model, fit_summary(tuned.result)
            split_batches, encoded = tuned.batches, tuned.inputs  # tokenised once, for training and the exports
            if not trainer.dist.is_main:  # the weights are the same on every process: rank 0 writes them
                return {}
            model.save(out / "checkpoint")
            save_stage_info(out / "checkpoint", self, manifest.labels, TextReplay(
                batch_size=sc.eval_batch_size, precision=sc.precision, max_length=s.encoder.max_length,
                # the conversation window it reads (None: utterance only), replayed as trained
                context=asdict(sc.context) if sc.context.enabled else None))
            trained.write_text(json.dumps(summary))  # last: the checkpoint above is complete
            kill_point("stage1_text.trained")
        model.to(trainer.device)
        # exports run on rank 0 alone (the other processes wait at the stage's barrier)
        preds = {}
        for split in splits_present(manifest):
            preds[split] = predict(model, split_batches(split), trainer.device, f"{self.label} {split}", sc.precision)
            kill_point("stage1_text.exporting")
        metrics = {**export(preds, manifest, out, self.label), **summary,
                   # what the encoder read per utterance (longer with context: the cost of a setting)
                   "input_tokens_mean": float(encoded.lengths.mean()), "input_tokens_max": int(encoded.lengths.max())}
        trained.unlink()
        return metrics

    def load(self, checkpoint: Path):
        return TextClassifier.load(checkpoint)

    def batches(self, model, view, inputs, replay: TextReplay):
        # the window it was trained with; online (view.online) the turns after each one are not known yet
        batcher = TextBatcher(model.tokenizer, replay.max_length)
        utterances = view.utterances
        encoded = encode_turns(model.tokenizer, utterances.table, replay.window(view.online), batcher.max_length)
        # per split, as the exports batched them: the same batches, so the same numbers (bf16 included)
        return [b for split in splits_present(utterances)
                for b in utterance_batches(batcher, utterances, encoded, rows_of(utterances, split), replay.batch_size)]
