"""One config system: typed dataclasses, loaded from YAML, every field overridable as ``key=value``.

    cfg = load_config("asr/paper", ["batch_size=4"], cls=ASRConfig)
    cfg = load_experiment("offline", ["stage1_text.epochs=1", "seeds=[0]"])   # merits.experiment: cls=ExperimentConfig

Unknown keys and ill-typed values are errors that name the key. ``config_hash`` gives the content hash
that decides whether a stage must run again.

This module is the loader only; each config lives beside its code: the experiment's in
:mod:`merits.experiment`, each stage's in its ``merits.stages`` module, and the other commands' in their
packages (``load_config(path, overrides, cls=ASRConfig)`` from ``merits.asr``, ``cls=TeachConfig`` from
``merits.teach``, ``cls=PretrainConfig`` from ``merits.pretrain``). Nothing here imports those packages.
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
    unlabelled: str = "context"                # turns without a label: context (kept for Stages II/III, never trained
                                               # on nor scored) | drop (left out) | error
    strict_labels: bool = False                # label problems (a class with no training example, names that differ
                                               # only by case or spacing) stop training instead of a warning

    def __post_init__(self) -> None:
        if self.unlabelled not in ("context", "drop", "error"):
            raise ConfigError(f"unlabelled: {self.unlabelled!r} is not context | drop | error")


@dataclass
class TextEncoderConfig:
    model: str = "all-MiniLM-L6-v2"            # HF id, local path, or a packaged offline model name
    max_length: int = 128                      # tokens per utterance
    pooling: str = "mean"                      # mean | cls: how token states become the utterance vector


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
    built = {k: _check_type(v, hints[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**built)
    except ConfigError as e:  # a section's own checks name its keys; say which section
        raise ConfigError(f"{prefix}{e}" if prefix and not str(e).startswith(prefix) else str(e)) from None


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
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:  # seeds=[0 (unclosed), name=!!python/... (a tag safe_load refuses)
            problem = str(getattr(e, "problem", None) or e).splitlines()[0]
            raise ConfigError(f"override {item!r}: {raw!r} is not a YAML value ({problem}); quote a string, close "
                              "a list: key=value, key=[a, b], key='text'") from None
        _set(tree, key.strip(), value)
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


def read_profile(path: Path, seen: tuple = ()) -> dict:
    """A YAML profile as a dict; ``extends: <profile>`` merges it over that profile (e.g. offline-base extends
    offline, changing only the encoder), resolved like any profile name."""
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: {parent!r} is not a profile name or path (e.g. extends: offline)")
    base = resolve_config_path(parent)
    if base.resolve() in seen or base.resolve() == path.resolve():
        raise ConfigError(f"{path}: extends {parent!r}, which extends it back")
    return _merge(read_profile(base, (*seen, path.resolve())), values)


def load_config(path=None, overrides=(), *, cls):
    """Load a YAML profile (or the defaults when ``path`` is None) and apply ``key=value`` overrides into ``cls``
    (an experiment: :func:`merits.experiment.load_experiment`); a config with a ``check()`` method is checked."""
    values: dict = {}
    profile = None
    if path is not None:
        p = resolve_config_path(path)
        values, profile = read_profile(p), p.stem
    changes = parse_overrides(overrides)
    merged = _merge(values, changes)
    if hasattr(cls, "complete"):  # a config that derives defaults from what the overrides changed (the run name)
        merged = cls.complete(profile, values, changes, merged)
    cfg = _build(cls, merged)
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(*parts) -> str:
    """Stable hash of configs (dataclasses or plain data) and input fingerprints."""
    plain = [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
