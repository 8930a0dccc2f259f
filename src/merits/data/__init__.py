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
    """A saved manifest directory (or its manifest.csv), or a corpus name built with ``prepare``."""
    p = Path(name)
    if p.is_file() and p.name == "manifest.csv":
        p = p.parent
    if p.is_dir():
        if root or options:
            raise ConfigError(f"{name} is a saved manifest: --root and -o options apply to a corpus name only")
        return Manifest.load(p)
    if name not in ADAPTERS:
        raise DataError(f"{name!r} is neither a manifest directory nor a corpus name ({sorted(ADAPTERS)})")
    return prepare(name, root, **options)


__all__ = ["ADAPTERS", "COLUMNS", "SPLITS", "Manifest", "load_manifest_or_corpus", "prepare", "prepare_config"]
