"""Corpus adapters: each turns one raw release into a :class:`Manifest` and stops there.

``prepare(corpus, root, **options)`` is the single entry point; nothing downstream knows which corpus a
manifest came from. An adapter is a function ``build(root, **options) -> Manifest`` whose keyword defaults are
its options' defaults (so they live beside the adapter, and ``prepare`` names the options it takes); a new one
is added with :func:`register_adapter`.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Callable

from merits.data.manifest import COLUMNS, NO_LABEL, SPLITS, Manifest
from merits.errors import ConfigError, DataError

# adapter name -> its build(root, **options) -> Manifest, or the module exposing it (imported on first use, so that
# one corpus' dependencies are never needed to read another)
ADAPTERS: dict[str, str | Callable[..., Manifest]] = {
    "meld": "merits.data.meld",
    "iemocap": "merits.data.iemocap",
    "mosi": "merits.data.mosi",
    "msp_podcast": "merits.data.msp_podcast",
    "custom": "merits.data.custom",
    "podcast_vtt": "merits.data.podcast_vtt",  # unlabelled text corpus for pseudo-labelling (issue 5)
    "audio_folder": "merits.data.audio_folder",  # unlabelled new recordings, for merits predict / asr
}


def register_adapter(corpus: str, build: str | Callable[..., Manifest]) -> None:
    """Make ``corpus`` a corpus name: ``build(root, **options) -> Manifest``, or the name of a module exposing it."""
    ADAPTERS[corpus] = build


def adapter(corpus: str) -> Callable[..., Manifest]:
    """The build function of ``corpus``; DataError naming the known corpora for an unknown one."""
    if corpus not in ADAPTERS:
        import difflib

        close = difflib.get_close_matches(str(corpus), sorted(ADAPTERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown corpus {corpus!r}{hint} known: {sorted(ADAPTERS)}")
    build = ADAPTERS[corpus]
    return importlib.import_module(build).build if isinstance(build, str) else build


def prepare(corpus: str, root=None, **options) -> Manifest:
    """Build the manifest of ``corpus`` from the release at ``root`` and validate it."""
    build = adapter(corpus)
    known = [p for p in inspect.signature(build).parameters if p != "root"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"unknown option(s) {unknown} for corpus {corpus!r}; it takes {known}")
    manifest = build(root, **options)
    return manifest.validate()


def prepare_config(data) -> Manifest:
    """The manifest a :class:`merits.config.DataConfig` names: ``prepare`` it, then keep at most
    ``max_conversations`` conversations per split."""
    return prepare(data.corpus, data.root, **data.options).subset(data.max_conversations)


def load_manifest_or_corpus(name: str, root=None, **options) -> Manifest:
    """What a command reads its utterances from, by the kind of ``name``:

    - a saved manifest directory (or its manifest.csv);
    - a corpus name (``ADAPTERS``), built with ``prepare`` from ``root`` and ``options``;
    - a .csv / .jsonl / .json file: the ``custom`` adapter, with ``options``;
    - any other folder: the ``audio_folder`` adapter (new recordings, one sub-folder per conversation).
    """
    p = Path(name)
    if p.is_file() and p.name == "manifest.csv":
        p = p.parent
    if p.is_dir() and (p / "manifest.json").is_file():
        if root or options:
            raise ConfigError(f"{name} is a saved manifest: root and adapter options apply to a corpus name only")
        return Manifest.load(p)
    if name in ADAPTERS and not p.exists():
        return prepare(name, root, **options)
    if root:
        raise ConfigError(f"root applies to a corpus name only, and {name!r} is a path")
    if p.is_file():
        return prepare("custom", p, **options)
    if p.is_dir():
        return prepare("audio_folder", p, **options)
    if p.suffix or "/" in name or "\\" in name:  # meant as a path
        raise DataError(f"{name} does not exist")
    raise DataError(f"{name!r} is neither a corpus name ({sorted(ADAPTERS)}), a manifest directory, a .csv / .jsonl "
                    "file nor a folder of recordings")


# files of conversations (the custom adapter) as `merits predict` takes them
CONVERSATION_FILES = (".csv", ".jsonl", ".json", ".ndjson")


def load_prediction_input(path, labels, root=None, **options) -> Manifest:
    """The utterances to predict (``merits predict INPUT``): :func:`load_manifest_or_corpus`, with the defaults new
    conversations need. A file of conversations gets ``split=test`` (new data has no split: every row is to be
    predicted) and ``labels`` = the trained run's classes (gold labels, where a row has one, must be among them);
    options given explicitly win.
    """
    p = Path(path)
    if p.suffix.lower() in CONVERSATION_FILES and p.is_file():
        options.setdefault("split", "test")
        options.setdefault("labels", list(labels))
    return load_manifest_or_corpus(str(path), root, **options)


__all__ = ["ADAPTERS", "COLUMNS", "NO_LABEL", "SPLITS", "Manifest", "adapter", "load_manifest_or_corpus",
           "load_prediction_input", "prepare", "prepare_config", "register_adapter"]
