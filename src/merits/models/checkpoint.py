"""Checkpoints of plain models: ``model.safetensors`` + ``model_config.json`` (the typed config that rebuilds it)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import save_file

from merits.errors import DamagedFileError, damaged, load_safetensors, read_json


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
    fix = "retrain the stage that wrote it (merits train reruns it once its directory is deleted)"
    meta = read_json(directory / "model_config.json", fix)
    if not isinstance(meta, dict) or meta.get("class") != cls.__name__:
        raise DamagedFileError(f"{directory}/model_config.json holds no {cls.__name__} config; {fix}")
    try:
        model = cls(config_cls(**meta["config"]))
    except (TypeError, KeyError, ValueError) as e:
        raise damaged(directory / "model_config.json", e, fix) from None
    try:
        model.load_state_dict(load_safetensors(directory / "model.safetensors", fix=fix))
    except RuntimeError as e:  # weights of another shape than the config says
        raise damaged(directory / "model.safetensors", e, fix) from None
    return model
