"""One config system: typed dataclasses, loaded from YAML, every field overridable as ``key=value``.

    cfg = load_config("offline", ["stage1_text.epochs=1", "seeds=[0]"])

Unknown keys and ill-typed values are errors that name the key. ``config_hash`` gives the content hash
that decides whether a stage must run again.

This module is the loader plus the experiment's own sections. The other commands' configs live beside their code
and load through the same function: ``load_config(path, overrides, cls=ASRConfig)`` (``merits.asr``),
``cls=TeachConfig`` (``merits.teach``), ``cls=PretrainConfig`` (``merits.pretrain``). Nothing here imports those
packages (they import this one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from merits.audio import AudioConfig
from merits.encoders.speech import SpeechEncoderConfig
from merits.errors import ConfigError

MODALITIES = ("text", "audio")

# Shipped profiles are package data (merits/configs/), found without the source tree.
CONFIG_DIRS = (Path(__file__).resolve().parent / "configs",)


@dataclass
class DataConfig:
    corpus: str = "meld"                       # adapter: meld | iemocap | mosi | msp_podcast | custom
    root: str | None = None                    # raw release; None = the embedded default (MELD text only)
    options: dict = field(default_factory=dict)  # adapter options, e.g. {validation_session: 4}
    max_conversations: int | None = None       # keep the first N conversations per split (quick runs, tests)


@dataclass
class TextEncoderConfig:
    model: str = "all-MiniLM-L6-v2"            # HF id, local path, or a packaged offline model name
    max_length: int = 128                      # tokens per utterance
    pooling: str = "mean"                      # mean | cls: how token states become the utterance vector


@dataclass
class Stage1TextConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 5e-5                           # encoder learning rate (AdamW)
    head_lr: float = 1e-3                      # classification head learning rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1                  # linear warm-up then linear decay
    dropout: float = 0.1
    patience: int = 2                          # epochs without validation wF1 gain before stopping
    eval_batch_size: int = 128


@dataclass
class SpeechHeadTrainConfig:
    """Stage I speech: the CARE downstream head on frozen features (layer weights -> FC 768 -> FC 256 -> classes)."""

    hidden: list[int] = field(default_factory=lambda: [768, 256])  # the last width is the exported embedding
    dropout: float = 0.3
    epochs: int = 60
    batch_size: int = 32                       # utterances per batch
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10


@dataclass
class ContextConfig:
    """Stage II: Bi-GRU + self-attention over a conversation of frozen Stage I embeddings."""

    hidden: int = 128                          # GRU units per direction (output is 2 * hidden)
    heads: int = 4
    dropout: float = 0.3
    input_dropout: float = 0.2
    causal: bool = False                       # not in the paper: turn t sees turns 0..t only (a GRU of 2 * hidden
                                               # units, one direction; attention to earlier turns), for live use
    epochs: int = 30
    batch_size: int = 16                       # conversations per batch
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 6


@dataclass
class FusionConfig:
    """Stage III: co-attention fusion of the Stage II text and audio sequences (needs both modalities)."""

    d_model: int = 128
    heads: int = 4
    layers: int = 1
    feedforward: int = 256
    dropout: float = 0.1
    input_dropout: float = 0.0                 # on the Stage II inputs (train rows are cleaner than test rows)
    causal: bool = False                       # not in the paper: each turn attends to turns up to itself only
    epochs: int = 40
    batch_size: int = 16                       # conversations per batch
    lr: float = 5e-4
    weight_decay: float = 1e-4
    patience: int = 8


@dataclass
class ExperimentConfig:
    name: str = "meld-offline"
    runs_dir: str = "runs"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    device: str = "auto"                       # auto | cpu | cuda
    threads: int | None = None                 # torch CPU threads; None = torch default
    modalities: list[str] = field(default_factory=lambda: ["text"])  # text and/or audio branches to train
    cache_dir: str = ".cache/features"         # frozen speech-encoder features, keyed by corpus/encoder/config
    data: DataConfig = field(default_factory=DataConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    stage1_text: Stage1TextConfig = field(default_factory=Stage1TextConfig)
    stage2_text: ContextConfig = field(default_factory=ContextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    speech_encoder: SpeechEncoderConfig = field(default_factory=SpeechEncoderConfig)
    stage1_audio: SpeechHeadTrainConfig = field(default_factory=SpeechHeadTrainConfig)
    stage2_audio: ContextConfig = field(default_factory=ContextConfig)
    stage3: FusionConfig = field(default_factory=FusionConfig)  # runs when modalities hold text and audio
    # the paper's "combined" ablation: also train Stages II (both modalities) + III jointly, end to end, from the
    # Stage I embeddings (shapes from stage2_text / stage2_audio / stage3, optimiser from stage3); reported beside
    # the hierarchical Stage III
    combined: bool = False


# ---------------------------------------------------------------------------------------------- building
def _check_type(value, annotation, key: str):
    """Coerce ``value`` to ``annotation`` where that is lossless (int -> float); raise ConfigError otherwise."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | globals())  # noqa: S307 - our own annotations only
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_type(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} fits none of {annotation}")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(annotation, value, key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation) or (typing.Any,)
        return [_check_type(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is typing.Any or (isinstance(annotation, type) and isinstance(value, annotation)
                                    and not (annotation is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{key}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _build(cls, values: dict, prefix: str = ""):
    """``cls(**values)`` with every value type-checked (nested sections built recursively); missing keys keep
    their defaults. Constructing through ``cls`` runs each dataclass' own ``__post_init__`` checks."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config keys {[prefix + u for u in unknown]}; valid here: {sorted(names)}")
    return cls(**{k: _check_type(v, hints[k], prefix + k) for k, v in values.items()})


def _set(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides) -> dict:
    """``["a.b=1", "seeds=[0,1]"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    tree: dict = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options" else v
    return out


def resolve_config_path(path: str | Path) -> Path:
    """A config by path, or by name among the shipped profiles (``offline`` -> merits/configs/offline.yaml)."""
    p = Path(path)
    if p.is_file():
        return p
    inner = Path(*p.parts[1:]) if p.parts[:1] == ("configs",) and len(p.parts) > 1 else p  # configs/asr/paper.yaml
    for directory in CONFIG_DIRS:
        for candidate in (directory / inner, directory / f"{inner}.yaml"):
            if candidate.is_file():
                return candidate
    shipped = sorted({str(x.relative_to(d).with_suffix("")) for d in CONFIG_DIRS for x in d.rglob("*.yaml")})
    raise ConfigError(f"config {path} not found (shipped profiles: {shipped})")


def load_config(path=None, overrides=(), cls=ExperimentConfig):
    """Load a YAML profile (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    values: dict = {}
    if path is not None:
        p = resolve_config_path(path)
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    values = _merge(values, parse_overrides(overrides))
    cfg = _build(cls, values)
    return check_experiment(cfg) if isinstance(cfg, ExperimentConfig) else cfg


def check_experiment(cfg: "ExperimentConfig") -> "ExperimentConfig":
    """Semantic checks that types alone do not catch; errors name the key."""
    from merits.data import ADAPTERS

    if cfg.data.corpus not in ADAPTERS:
        raise ConfigError(f"data.corpus: unknown corpus {cfg.data.corpus!r}; known: {sorted(ADAPTERS)}")
    if cfg.text_encoder.pooling not in ("mean", "cls"):
        raise ConfigError(f"text_encoder.pooling: {cfg.text_encoder.pooling!r} is not mean | cls")
    if not cfg.seeds:
        raise ConfigError("seeds: give at least one seed")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: {cfg.seeds} repeats a seed")
    if not cfg.modalities or set(cfg.modalities) - set(MODALITIES):
        raise ConfigError(f"modalities: {cfg.modalities} must be a non-empty subset of {list(MODALITIES)}")
    if cfg.combined and set(cfg.modalities) != set(MODALITIES):
        raise ConfigError(f"combined: the combined ablation fuses text and audio; modalities is {cfg.modalities}")
    for section in ("stage1_text", "stage2_text", "stage1_audio", "stage2_audio", "stage3"):
        sc = getattr(cfg, section)
        for key in ("epochs", "batch_size", "patience"):
            if getattr(sc, key) < 1:
                raise ConfigError(f"{section}.{key} must be >= 1, got {getattr(sc, key)}")
        if sc.lr <= 0:
            raise ConfigError(f"{section}.lr must be > 0, got {sc.lr}")
    for section in ("stage2_text", "stage2_audio"):
        sc = getattr(cfg, section)
        if sc.hidden * 2 % sc.heads:
            raise ConfigError(f"{section}.heads ({sc.heads}) must divide 2 * hidden ({2 * sc.hidden})")
    if cfg.stage3.d_model % cfg.stage3.heads:
        raise ConfigError(f"stage3.heads ({cfg.stage3.heads}) must divide stage3.d_model ({cfg.stage3.d_model})")
    if not cfg.stage1_audio.hidden or min(cfg.stage1_audio.hidden) < 1:
        raise ConfigError(f"stage1_audio.hidden must list positive widths, got {cfg.stage1_audio.hidden}")
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(*parts) -> str:
    """Stable hash of configs (dataclasses or plain data) and input fingerprints."""
    plain = [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
