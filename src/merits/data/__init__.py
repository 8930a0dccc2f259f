"""Corpus adapters: each turns one raw release into a :class:`Manifest` and stops there.

``prepare(corpus, root, **options)`` is the single entry point; nothing downstream knows which corpus a
manifest came from.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from merits.data.manifest import COLUMNS, SPLITS, Manifest
from merits.errors import ConfigError, DataError

# adapter name -> module exposing build(root, **options) -> Manifest
ADAPTERS = {
    "meld": "merits.data.meld",
    "iemocap": "merits.data.iemocap",
    "mosi": "merits.data.mosi",
    "msp_podcast": "merits.data.msp_podcast",
    "custom": "merits.data.custom",
    "podcast_vtt": "merits.data.podcast_vtt",  # unlabelled text corpus for pseudo-labelling (issue 5)
    "audio_folder": "merits.data.audio_folder",  # unlabelled new recordings, for merits predict / asr
}


def prepare(corpus: str, root=None, **options) -> Manifest:
    """Build the manifest of ``corpus`` from the release at ``root`` and validate it."""
    if corpus not in ADAPTERS:
        raise DataError(f"unknown corpus {corpus!r}; known: {sorted(ADAPTERS)}")
    module = importlib.import_module(ADAPTERS[corpus])
    known = [p for p in inspect.signature(module.build).parameters if p != "root"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"unknown option(s) {unknown} for corpus {corpus!r}; it takes {known}")
    manifest = module.build(root, **options)
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
    raise DataError(f"{name!r} is neither a corpus name ({sorted(ADAPTERS)}), a manifest directory, a .csv / .jsonl "
                    "file nor a folder of recordings")


__all__ = ["ADAPTERS", "COLUMNS", "SPLITS", "Manifest", "load_manifest_or_corpus", "prepare", "prepare_config"]
