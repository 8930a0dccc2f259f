"""CARE pretraining: distil a text encoder's utterance embedding (semantic) and frame-level acoustic features
(acoustic) into a WavLM backbone, on unlabelled speech; step-based, resumable, through the Trainer.

    merits care pretrain MANIFEST --out DIR [--config care/offline] [key=value ...]

MANIFEST: utterances with ``audio_path`` and a transcript in ``text`` (``merits asr`` writes one). Labels are unused.
DIR: ``targets/`` (the targets, computed once: semantic.safetensors (N, d), acoustic.safetensors (frames, A) with
per-utterance offsets), ``checkpoint/`` (the resumable training state, every ``checkpoint_every`` steps),
``care/`` (the pretrained CARE: ``speech_encoder.kind: care``, ``speech_encoder.model: DIR/care``), history.json.

Targets (pluggable, precomputed into the cache):
- semantic: any Hugging Face text encoder by id or path (``roberta-base`` in the paper's profile, the packaged
  all-MiniLM-L6-v2 offline), its last layer mean-pooled over the transcript's tokens;
- acoustic: ``frames``: a folder of ``<utterance_id>.npy`` (T, A) frame features at 100 Hz, e.g. PASE+ (256-d) where
  you have it; or ``opensmile`` (the offline default): openSMILE low-level descriptors of ``acoustic_set`` (eGeMAPSv02:
  25 LLDs) at 100 Hz. Both are taken every second frame (50 Hz, WavLM's frame rate) and z-normalised per utterance.
  The opensmile default departs from the paper (PASE+ is not installable here); docs/care.md says so.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from merits.audio import SAMPLE_RATE, AudioConfig, AudioError, load_utterance
from merits.care.model import CareConfig, CareModel
from merits.config import config_hash
from merits.data.manifest import Manifest
from merits.errors import ConfigError, DataError
from merits.runs import load_embeddings, save_embeddings
from merits.training import Trainer, TrainerConfig, adamw, fit_steps
from merits.distributed import alone
from merits.progress import progress
from merits.runtime import seed_everything

log = logging.getLogger("merits")
HOP = 320  # WavLM frames: 20 ms at 16 kHz
CACHED_CLIPS = 2048  # decoded clips kept in memory by the crop sampler (about 0.6 GB of 5 s clips)


@dataclass
class CareTargetsConfig:
    semantic_model: str = "all-MiniLM-L6-v2"   # text encoder of the semantic target (paper: roberta-base)
    max_length: int = 128                      # its tokens per transcript
    acoustic: str = "opensmile"                # opensmile (LLDs, the offline default) | frames (<id>.npy at 100 Hz)
    acoustic_set: str = "eGeMAPSv02"           # opensmile: the feature set whose low-level descriptors are the target
    frames_dir: str | None = None              # frames: the folder of <utterance_id>.npy (T, A), e.g. PASE+ (A = 256)

    def __post_init__(self) -> None:
        if self.acoustic not in ("opensmile", "frames"):
            raise ConfigError(f"targets.acoustic: {self.acoustic!r} is not opensmile | frames")
        if self.acoustic == "frames" and not self.frames_dir:
            raise ConfigError("targets.frames_dir: give the folder of <utterance_id>.npy frame features")


@dataclass
class CarePretrainConfig(TrainerConfig):
    """``merits care pretrain``: the model, its targets and the step-based recipe (the paper's: AdamW, lr 1e-5,
    betas (0.9, 0.99), random 5 s crops)."""

    care: CareConfig = field(default_factory=CareConfig)
    targets: CareTargetsConfig = field(default_factory=CareTargetsConfig)
    # a WavLMConfig for a backbone from random initialisation (a reduced one for small runs); null: care.backbone's
    # pretrained weights
    random_backbone: dict | None = None
    steps: int = 1000                          # optimiser steps
    batch_size: int = 8                        # crops per global batch
    lr: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # AdamW
    weight_decay: float = 0.0
    crop_seconds: float = 5.0                  # random crops this long (a batch's shortest clip caps its crops)
    semantic_weight: float = 1.0               # the two losses are summed with these weights
    acoustic_weight: float = 1.0               # (the paper: equal)
    validation_fraction: float = 0.1           # utterances held out for the validation losses
    validate_every: int = 200                  # steps between validations
    checkpoint_every: int = 200                # steps between resumable checkpoints (a kill loses at most this many)
    seed: int = 0                              # crops, batches, the validation split, initialisation
    device: str = "auto"                       # auto (cuda when available) | cpu | cuda
    threads: int | None = None                 # torch CPU threads; None = torch default
    audio: AudioConfig = field(default_factory=AudioConfig)  # on_error stop | skip (bad clips left out, reported)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("steps", "validate_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.crop_seconds <= 0.1:
            raise ConfigError(f"crop_seconds must be > 0.1, got {self.crop_seconds}")


# ---------------------------------------------------------------------------------------------- targets
def semantic_targets(texts: list[str], model: str, max_length: int, device) -> np.ndarray:
    """(N, d): the text encoder's last layer, mean-pooled over each transcript's real tokens."""
    from merits.encoders.text import TextBatcher, load_tokenizer_and_encoder, pool

    tokenizer, encoder = load_tokenizer_and_encoder(model)
    encoder.to(device).eval()
    batcher = TextBatcher(tokenizer, max_length)
    out = []
    with torch.no_grad():
        for i in progress(range(0, len(texts), 64), desc="semantic targets"):
            b = {k: v.to(device) for k, v in batcher.encode(texts[i:i + 64]).items()}
            out.append(pool(encoder(**b).last_hidden_state, b["attention_mask"], "mean").float().cpu().numpy())
    return np.concatenate(out)


def _zscore(frames: np.ndarray) -> np.ndarray:
    frames = frames[::2]  # 100 Hz -> 50 Hz, WavLM's frame rate
    return ((frames - frames.mean(0)) / (frames.std(0) + 1e-5)).astype(np.float32)


def acoustic_frames(audio: np.ndarray, uid: str, cfg: CareTargetsConfig, smile=None) -> np.ndarray:
    """(T, A) z-normalised frame features at 50 Hz of one utterance."""
    if cfg.acoustic == "frames":
        path = Path(cfg.frames_dir) / f"{uid}.npy"
        if not path.is_file():
            raise DataError(f"targets.frames_dir {cfg.frames_dir} has no {path.name} for utterance {uid}")
        return _zscore(np.load(path, allow_pickle=False).astype(np.float32))
    return _zscore(smile.process_signal(audio, SAMPLE_RATE).to_numpy(np.float32))


def build_targets(manifest: Manifest, cfg: CarePretrainConfig, directory: Path, device) -> dict:
    """Compute the targets once into ``directory`` (reused while the manifest and target settings are unchanged);
    bad audio follows ``cfg.audio.on_error`` (skip: left out, listed in skipped.json)."""
    key = config_hash("care-targets", manifest.fingerprint(), cfg.targets, cfg.audio)
    if (directory / "key.json").is_file() and json.loads((directory / "key.json").read_text())["key"] == key:
        return _load_targets(directory)
    table = manifest.table
    empty = table.loc[table["text"].str.strip() == "", "utterance_id"].tolist()
    if empty:
        raise DataError(f"CARE's semantic target needs a transcript per utterance; {len(empty)} have none, e.g. "
                        f"{empty[:5]}: transcribe them first (merits asr MANIFEST --out DIR)")
    smile = None
    if cfg.targets.acoustic == "opensmile":
        import opensmile

        smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, cfg.targets.acoustic_set),
                                feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    ids, frames, skipped = [], [], {}
    for row in progress(table.to_dict("records"), desc="acoustic targets"):
        try:
            audio = load_utterance(row, cfg.audio)
        except AudioError as e:
            if cfg.audio.on_error != "skip":
                raise
            skipped[row["utterance_id"]] = str(e)
            continue
        ids.append(row["utterance_id"])
        frames.append(acoustic_frames(audio, row["utterance_id"], cfg.targets, smile))
    texts = table.set_index("utterance_id").loc[ids, "text"].tolist()
    semantic = semantic_targets(texts, cfg.targets.semantic_model, cfg.targets.max_length, device)
    directory.mkdir(parents=True, exist_ok=True)
    save_embeddings(directory / "semantic.safetensors", ids, semantic)
    offsets = np.cumsum([0] + [len(f) for f in frames]).astype(np.int64)
    from safetensors.numpy import save_file

    save_file({"frames": np.concatenate(frames), "offsets": offsets}, str(directory / "acoustic.safetensors"),
              metadata={"utterance_ids": json.dumps(ids)})
    (directory / "skipped.json").write_text(json.dumps(skipped, indent=2))
    (directory / "key.json").write_text(json.dumps({"key": key}))  # last: the targets above are complete
    if skipped:
        log.warning("CARE targets: %d utterances left out for bad audio (see %s)", len(skipped), directory / "skipped.json")
    return _load_targets(directory)


def _load_targets(directory: Path) -> dict:
    from merits.errors import load_safetensors

    ids, semantic = load_embeddings(directory / "semantic.safetensors")
    acoustic = load_safetensors(directory / "acoustic.safetensors", "numpy", "delete the targets folder")
    offsets = acoustic["offsets"]
    return {"ids": ids, "semantic": semantic["embeddings"],
            "acoustic": [acoustic["frames"][offsets[i]:offsets[i + 1]] for i in range(len(ids))],
            "skipped": json.loads((directory / "skipped.json").read_text())}


# ---------------------------------------------------------------------------------------------- batches
class Crops:
    """Global batch k of the training utterances: deterministic in (seed, k), so the data position of a resumed run
    is its step count. Each batch crops its clips to one length (min(crop_seconds, its shortest clip)), as WavLM's
    front end needs; the acoustic target is cut to the same span (50 Hz frames)."""

    def __init__(self, manifest: Manifest, targets: dict, rows: list[int], cfg: CarePretrainConfig):
        self.manifest, self.targets, self.rows, self.cfg = manifest, targets, rows, cfg
        self.by_id = manifest.table.set_index("utterance_id")
        self._audio: OrderedDict[str, np.ndarray] = OrderedDict()

    def audio(self, i: int) -> np.ndarray:
        """Decoded clips are kept for reuse, the most recent CACHED_CLIPS only: a corpus of 150k clips would not fit."""
        uid = self.targets["ids"][i]
        if uid in self._audio:
            self._audio.move_to_end(uid)
        else:
            self._audio[uid] = load_utterance({"utterance_id": uid, **self.by_id.loc[uid].to_dict()}, self.cfg.audio)
            if len(self._audio) > CACHED_CLIPS:
                self._audio.popitem(last=False)
        return self._audio[uid]

    def __call__(self, k: int, random_crop: bool = True) -> dict:
        size = self.cfg.batch_size
        epoch, within = divmod(k * size, len(self.rows))
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(self.rows)
        chosen = [int(order[(within + j) % len(order)]) for j in range(size)]
        return self.batch(chosen, np.random.default_rng([self.cfg.seed, 1_000_003, k]) if random_crop else None)

    def batch(self, chosen: list[int], rng: np.random.Generator | None) -> dict:
        clips = [self.audio(i) for i in chosen]
        length = min(int(self.cfg.crop_seconds * SAMPLE_RATE), min(len(c) for c in clips))
        waves, acoustic = [], []
        for i, clip in zip(chosen, clips):
            start = int(rng.integers(0, len(clip) - length + 1)) if rng is not None else 0
            start -= start % HOP  # on a frame boundary, so that the target frames line up
            waves.append(clip[start:start + length])
            frames = self.targets["acoustic"][i]
            acoustic.append(frames[start // HOP:(start + length) // HOP])
        t = min(len(a) for a in acoustic)
        return {"inputs": {"waveform": torch.from_numpy(np.stack(waves))},
                "semantic": torch.from_numpy(self.targets["semantic"][chosen]),
                "acoustic": torch.from_numpy(np.stack([a[:t] for a in acoustic])), "n": len(chosen)}


def care_loss(cfg: CarePretrainConfig):
    """(out, batch, device) -> (weighted sum over the batch's clips, {semantic, acoustic} sums): per clip, the MSE
    averaged over dimensions (semantic) and over frames and dimensions (acoustic), frames aligned at 50 Hz."""

    def loss(out, batch, device):
        semantic = ((out.semantic.float() - batch["semantic"].to(device)) ** 2).mean(-1).sum()
        target = batch["acoustic"].to(device)
        t = min(out.acoustic.shape[1], target.shape[1])
        acoustic = ((out.acoustic[:, :t].float() - target[:, :t]) ** 2).mean((1, 2)).sum()
        return cfg.semantic_weight * semantic + cfg.acoustic_weight * acoustic, {"semantic": semantic,
                                                                                   "acoustic": acoustic}

    return loss


# ---------------------------------------------------------------------------------------------- entry point
def build_model(cfg: CarePretrainConfig, acoustic_dim: int, semantic_dim: int) -> CareModel:
    from transformers import AutoModel, WavLMConfig, WavLMModel

    from merits.packaged import resolve_model

    care = replace(cfg.care, acoustic_dim=acoustic_dim)
    text = AutoModel.from_pretrained(resolve_model(care.text_model, "text"))
    if cfg.random_backbone is not None:
        wavlm = WavLMModel(WavLMConfig(**cfg.random_backbone))
    elif care.backbone == "random":
        raise ConfigError("care.backbone: random needs random_backbone (a WavLMConfig: hidden_size, num_hidden_layers, ...)")
    else:
        wavlm = WavLMModel.from_pretrained(care.backbone)
    model = CareModel(care, wavlm, text)
    if text.config.hidden_size != semantic_dim:
        raise ConfigError(f"the semantic branch ({care.text_model}, {text.config.hidden_size}-d) and the semantic "
                          f"target ({cfg.targets.semantic_model}, {semantic_dim}-d) differ in width: use one text "
                          "model family for both (the paper: roberta-base)")
    return model


def pretrain(manifest: Manifest, out: str | Path, cfg: CarePretrainConfig) -> dict:
    """Pretrain CARE on ``manifest``'s audio into ``out`` (resumable); returns {history, care, ...}."""
    out = Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    trainer = Trainer(cfg, cfg.device, "CARE pretraining")
    if trainer.dist.is_main:  # one process computes the targets; the others then read them
        with alone():
            build_targets(manifest, cfg, out / "targets", trainer.device)
    trainer.dist.barrier()
    targets = build_targets(manifest, cfg, out / "targets", trainer.device)  # cached now: read
    n = len(targets["ids"])
    if n < 2:
        raise DataError(f"CARE pretraining needs at least 2 usable utterances, the manifest gives {n}")
    order = np.random.default_rng(cfg.seed).permutation(n)
    held = max(1, int(round(cfg.validation_fraction * n))) if cfg.validation_fraction > 0 else 0
    validation, train = sorted(order[:held].tolist()), sorted(order[held:].tolist())
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, targets["acoustic"][0].shape[1], targets["semantic"].shape[1])
    crops = Crops(manifest, targets, train, cfg)
    loss_of = care_loss(cfg)
    checks = [crops.batch(validation[i:i + cfg.batch_size], None) for i in range(0, len(validation), cfg.batch_size)]

    def validate(model) -> dict:
        sums = {"semantic": 0.0, "acoustic": 0.0}
        with torch.no_grad():
            for b in checks:
                _, parts = loss_of(model(**{k: v.to(trainer.device) for k, v in b["inputs"].items()}), b,
                                   trainer.device)
                for k in sums:
                    sums[k] += float(parts[k])
        return {k: v / max(len(validation), 1) for k, v in sums.items()}

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(model, cfg.lr, cfg.weight_decay, betas=tuple(cfg.betas), params=trainable)
    history = fit_steps(trainer, model, crops, loss_of, optimizer, cfg.steps, out / "checkpoint",
                        cfg.checkpoint_every, validate if checks else None, cfg.validate_every)
    if trainer.dist.is_main:
        model.save(out / "care")
        (out / "history.json").write_text(json.dumps(history, indent=2))
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    return {"history": history, "care": str(out / "care"), "utterances": n, "validation": len(validation),
            "skipped": targets["skipped"]}
