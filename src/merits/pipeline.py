"""The hierarchy from one config: prepare the manifest, then per modality Stage I -> Stage II for every seed,
then (with text and audio) Stage III fusion, then the report.

Every stage is cached under ``runs/<experiment>/<stage>/seed-<k>/`` by a content hash of its inputs and
config, so rerunning a finished experiment only reprints its report and a killed one resumes. Speech
features are extracted once into the feature cache (``cache_dir``); audio stages never read audio.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from merits import __version__
from merits.config import ContextConfig, ExperimentConfig, config_hash, save_config
from merits.data import prepare_config
from merits.data.manifest import Manifest
from merits.encoders.speech import build_speech_encoder
from merits.features import extract_features
from merits.report import write_report
from merits.runs import EMBEDDINGS, run_cached, stage_dir
from merits.stages import context, fusion, speech_utterance, text_utterance
from merits.training import seed_everything

log = logging.getLogger("merits")


@dataclass
class Branch:
    """One modality: its manifest, what its Stage I depends on, how to run Stage I, its Stage II config."""

    modality: str                              # text | audio
    manifest: Manifest
    inputs: tuple                              # everything Stage I's output depends on (hashed into its key)
    stage1: Callable[[Path, int], dict]        # (out_dir, seed) -> metrics
    stage2: ContextConfig


def build_manifest(cfg: ExperimentConfig) -> Manifest:
    manifest = prepare_config(cfg.data)
    manifest.require_labels()
    return manifest


def branches(cfg: ExperimentConfig, manifest: Manifest, notes: list[str]) -> list[Branch]:
    out = []
    if "audio" in cfg.modalities:
        store = extract_features(manifest, build_speech_encoder(cfg.speech_encoder), cfg.cache_dir, cfg.audio)
        audio = manifest.select(store.available_ids) if store.skipped else manifest
        if store.skipped:
            notes.append(f"Audio: {store.summary()}")
        out.append(Branch("audio", audio, ("audio", audio.fingerprint(), store.directory.name, cfg.stage1_audio),
                          lambda o, seed: speech_utterance.run(cfg.stage1_audio, audio, store, seed, o, cfg.device),
                          cfg.stage2_audio))
    if "text" in cfg.modalities:
        manifest.require_text()
        out.append(Branch("text", manifest, ("text", manifest.fingerprint(), cfg.text_encoder, cfg.stage1_text),
                          lambda o, seed: text_utterance.run(cfg, manifest, seed, o), cfg.stage2_text))
    return out


def run_experiment(cfg: ExperimentConfig) -> dict:
    """Run every stage of ``cfg`` for every seed; return {"per_seed": ..., "table": markdown, "dir": ...}."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    root = Path(cfg.runs_dir) / cfg.name
    manifest = build_manifest(cfg)
    manifest.save(root / "manifest")
    save_config(cfg, root / "config.yaml")
    log.info("%s", manifest.report())
    notes: list[str] = []
    per_seed: dict[str, dict[int, dict]] = {}
    stage1_keys: dict[tuple[str, int], str] = {}
    stage2_keys: dict[tuple[str, int], str] = {}
    active = branches(cfg, manifest, notes)
    for branch in active:
        m = branch.modality
        for seed in cfg.seeds:
            key1 = config_hash(f"stage1_{m}", __version__, *branch.inputs, seed)  # a new release recomputes
            dir1 = stage_dir(cfg.runs_dir, cfg.name, f"stage1_{m}", seed)

            def stage1(out, seed=seed, branch=branch):
                seed_everything(seed)
                return branch.stage1(out, seed)

            def stage2(out, seed=seed, branch=branch, dir1=dir1):
                seed_everything(seed)
                return context.run(branch.stage2, branch.manifest, dir1 / EMBEDDINGS, seed, out, cfg.device,
                                   f"Stage II {branch.modality}")

            per_seed.setdefault(f"stage1_{m}", {})[seed] = run_cached(dir1, key1, stage1)
            stage1_keys[m, seed] = key1
            key2 = config_hash(f"stage2_{m}", key1, branch.stage2, seed)
            stage2_keys[m, seed] = key2
            per_seed.setdefault(f"stage2_{m}", {})[seed] = run_cached(
                stage_dir(cfg.runs_dir, cfg.name, f"stage2_{m}", seed), key2, stage2)
    if {b.modality for b in active} == {"text", "audio"}:
        # Stage III on the utterances both branches kept (all of them unless bad audio was skipped)
        both = next(b.manifest for b in active if b.modality == "audio")
        for seed in cfg.seeds:
            key3 = config_hash("stage3", stage2_keys["text", seed], stage2_keys["audio", seed], cfg.stage3, seed)

            def stage3(out, seed=seed):
                seed_everything(seed)
                text_dir, audio_dir = (stage_dir(cfg.runs_dir, cfg.name, f"stage2_{m}", seed) for m in ("text", "audio"))
                return fusion.run(cfg.stage3, both, text_dir / EMBEDDINGS, audio_dir / EMBEDDINGS, seed, out, cfg.device)

            per_seed.setdefault("stage3", {})[seed] = run_cached(stage_dir(cfg.runs_dir, cfg.name, "stage3", seed), key3, stage3)
            if cfg.combined:
                per_seed.setdefault("combined", {})[seed] = run_combined(cfg, both, stage1_keys, seed)
    name = manifest.corpus.upper() if manifest.corpus.isalnum() else manifest.corpus  # MELD, MOSI, IEMOCAP
    table = write_report(root, name, per_seed, notes)
    return {"per_seed": per_seed, "table": table, "dir": str(root)}


def run_combined(cfg: ExperimentConfig, manifest: Manifest, stage1_keys: dict, seed: int) -> dict:
    """The "combined" ablation for one seed: Stages II + III trained jointly on the Stage I embeddings (cached)."""
    key = config_hash("combined", stage1_keys["text", seed], stage1_keys["audio", seed], cfg.stage2_text,
                      cfg.stage2_audio, cfg.stage3, seed)

    def train(out):
        seed_everything(seed)
        text_dir, audio_dir = (stage_dir(cfg.runs_dir, cfg.name, f"stage1_{m}", seed) for m in ("text", "audio"))
        return fusion.run_combined(cfg.stage3, cfg.stage2_text, cfg.stage2_audio, manifest, text_dir / EMBEDDINGS,
                                   audio_dir / EMBEDDINGS, seed, out, cfg.device)

    return run_cached(stage_dir(cfg.runs_dir, cfg.name, "combined", seed), key, train)
