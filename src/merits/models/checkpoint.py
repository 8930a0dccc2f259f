"""Checkpoints of plain models: ``model.safetensors`` + ``model_config.json`` (the typed config that rebuilds it)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file


def save_model(model, directory: str | Path) -> Path:
    """Save ``model`` (which has a dataclass ``config``) so that :func:`load_model` rebuilds it alone."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    meta = {"class": type(model).__name__, "config": asdict(model.config)}
    (directory / "model_config.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_model(cls, config_cls, directory: str | Path):
    """Rebuild ``cls(config_cls(**saved config))`` and load its weights (safetensors: no code runs on load)."""
    directory = Path(directory)
    meta = json.loads((directory / "model_config.json").read_text())
    if meta["class"] != cls.__name__:
        raise ValueError(f"{directory} holds a {meta['class']}, not a {cls.__name__}")
    model = cls(config_cls(**meta["config"]))
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model
