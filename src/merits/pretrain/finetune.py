"""Pretraining: fine-tune the text encoder on teacher pseudo-labels (the paper's "RoBERTa-FT").

Input: a manifest whose ``label`` column holds a teacher's answers (negative / neutral / positive; empty where the
teacher's answer was invalid), as ``merits teach`` exports it. No human label is used.

Output directory ``out``::

    checkpoint/encoder/   the fine-tuned encoder + tokenizer in Hugging Face format (safetensors): the path that
                          Stage I text starts from (``text_encoder.model=<out>/checkpoint/encoder``)
    checkpoint/           plus the sentiment head (head.safetensors) and model_config.json
    split.csv             utterance_id -> train | validation (the random 80/20 split, seeded)
    metrics.json          counts, label distribution, validation scores, training history (also in done.json)

The run is cached like a stage: a rerun with the same pseudo-labels and config skips it, a killed run restarts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from merits.config import config_hash, to_dict
from merits.data.manifest import Manifest, _listing
from merits.errors import DataError
from merits.metrics import classification_metrics
from merits.pretrain.config import PretrainConfig
from merits.runs import DONE, run_cached
from merits.stages.common import fit_summary
from merits.stages.text_utterance import fine_tune
from merits.runtime import seed_everything

log = logging.getLogger("merits")
ENCODER = Path("checkpoint") / "encoder"


def pseudo_labelled(manifest: Manifest, cfg: PretrainConfig) -> tuple[Manifest, dict]:
    """The training manifest: labelled rows with text, split at random (by utterance) into train / validation.

    Each utterance becomes its own one-turn conversation: pretraining is per utterance, and a random utterance
    split would otherwise spread a conversation over both splits. Returns (manifest, counts of dropped rows).
    """
    t = manifest.table
    unknown = t.loc[(t["label"] != "") & ~t["label"].isin(cfg.labels)]
    if len(unknown):
        pairs = [f"{u} ({lab!r})" for u, lab in zip(unknown["utterance_id"], unknown["label"])]
        raise DataError(f"pseudo-labels of {manifest.corpus!r} outside pretrain.labels {cfg.labels}: {_listing(pairs)}")
    keep = (t["label"] != "") & (t["text"].str.strip() != "")
    dropped = {"no_label": int((t["label"] == "").sum()), "empty_text": int(((t["label"] != "") & ~keep).sum())}
    rows = t[keep].copy()
    if len(rows) < 10:
        raise DataError(f"{manifest.corpus!r} has {len(rows)} pseudo-labelled utterances with text; pretraining "
                        "needs at least 10 (label them first: merits teach)")
    rng = np.random.default_rng(cfg.seed)
    validation = rng.random(len(rows)) < cfg.validation_fraction
    validation[rng.integers(len(rows))] = True  # never an empty validation split
    rows["split"] = np.where(validation, "validation", "train")
    rows["conversation_id"], rows["turn"] = rows["utterance_id"], 0
    out = Manifest(f"{manifest.corpus}-pseudo", tuple(cfg.labels), rows, manifest.source).validate()
    missing = [c for c in cfg.labels if not (rows.loc[~validation, "label"] == c).any()]
    if missing:
        log.warning("pretraining: no training utterance has the pseudo-label(s) %s", missing)
    return out, dropped


def pretrain(manifest: Manifest, out: str | Path, cfg: PretrainConfig | None = None) -> dict:
    """Fine-tune ``cfg.text_encoder`` on the pseudo-labels of ``manifest``; return the metrics (see module doc)."""
    cfg = cfg or PretrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / DONE).is_file():
        raise DataError(f"{out} exists and is not a pretraining output: give an empty or new output directory")
    data, dropped = pseudo_labelled(manifest, cfg)
    key = config_hash("pretrain", data.fingerprint(), to_dict(cfg))

    def train(directory: Path) -> dict:
        seed_everything(cfg.seed)
        # its state after every epoch in the .partial directory: a killed pretraining goes on at its next epoch
        tuned = fine_tune(cfg.text_encoder, cfg.train, data, cfg.seed, cfg.device, "Pretraining", directory / "epochs")
        # every process predicts its share of the validation split; rank 0 alone writes
        preds = tuned.trainer.predict(tuned.model, tuned.batches("validation"), "Pretraining validation")
        if not tuned.trainer.dist.is_main:
            return {}
        tuned.model.save(directory / "checkpoint")
        data.table[["utterance_id", "split"]].to_csv(directory / "split.csv", index=False)
        counts = data.table.groupby(["split", "label"]).size().unstack(fill_value=0)
        return {"validation": classification_metrics(preds.label_ids, preds.predicted, data.labels),
                "utterances": {s: int((data.table["split"] == s).sum()) for s in ("train", "validation")},
                "label_counts": {s: {k: int(v) for k, v in row.items()} for s, row in counts.iterrows()},
                "dropped": dropped, "source": {"corpus": manifest.corpus, "fingerprint": manifest.fingerprint()},
                "encoder": str(out / ENCODER), "config": to_dict(cfg), **fit_summary(tuned.result)}

    metrics = run_cached(out, key, train, distributed=True)
    log.info("pretrained encoder: %s (validation weighted F1 %.3f on %d utterances)", metrics["encoder"],
             metrics["validation"]["weighted_f1"], metrics["utterances"]["validation"])
    return metrics

