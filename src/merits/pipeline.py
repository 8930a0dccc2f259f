"""The hierarchy from one config: prepare the manifest, then Stage I -> Stage II per seed, then the report.

Every stage is cached under ``runs/<experiment>/<stage>/seed-<k>/`` by a content hash of its inputs and
config, so rerunning a finished experiment only reprints its report and a killed one resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from merits.config import ExperimentConfig, config_hash, save_config
from merits.data import prepare
from merits.data.manifest import Manifest
from merits.report import write_report
from merits.runs import EMBEDDINGS, run_cached, stage_dir
from merits.stages import context, text_utterance
from merits.training import seed_everything

log = logging.getLogger("merits")


def build_manifest(cfg: ExperimentConfig) -> Manifest:
    manifest = prepare(cfg.data.corpus, cfg.data.root, **cfg.data.options).subset(cfg.data.max_conversations)
    manifest.require_labels()
    return manifest


def run_experiment(cfg: ExperimentConfig) -> dict:
    """Run every stage of ``cfg`` for every seed; return {"per_seed": ..., "table": markdown}."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.runs_dir) / cfg.name
    manifest = build_manifest(cfg)
    manifest.require_text()
    manifest.save(root / "manifest")
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    log.info("%s", manifest.report())
    per_seed: dict[str, dict[int, dict]] = {"stage1_text": {}, "stage2_text": {}}
    for seed in cfg.seeds:
        key1 = config_hash("stage1_text", manifest.fingerprint(), cfg.text_encoder, cfg.stage1_text, seed)
        dir1 = stage_dir(cfg.runs_dir, cfg.name, "stage1_text", seed)

        def stage1(out, seed=seed):
            seed_everything(seed)
            return text_utterance.run(cfg, manifest, seed, out)

        per_seed["stage1_text"][seed] = run_cached(dir1, key1, stage1)
        key2 = config_hash("stage2_text", key1, cfg.stage2_text, seed)

        def stage2(out, seed=seed):
            seed_everything(seed)
            return context.run(cfg.stage2_text, manifest, dir1 / EMBEDDINGS, seed, out, cfg.device, "Stage II text")

        per_seed["stage2_text"][seed] = run_cached(stage_dir(cfg.runs_dir, cfg.name, "stage2_text", seed), key2, stage2)
    table = write_report(root, manifest.corpus.upper() if len(manifest.corpus) <= 5 else manifest.corpus, per_seed)
    return {"per_seed": per_seed, "table": table, "dir": str(root)}
