"""Loading pretrained Hugging Face parts (weights, tokenizer, feature extractor) with one clear failure.

Every encoder that takes a model id or path goes through :func:`load_pretrained`, so a model that is not on
this machine always raises ModelNotFoundError naming it and saying how to provide it.
"""

from __future__ import annotations

from typing import Callable

from merits.errors import ModelNotFoundError


def load_pretrained(what: str, name: str, where: str, loaders: tuple[Callable[[str], object], ...],
                    local: str, offline: str) -> tuple:
    """``tuple(load(where) for load in loaders)``, or ModelNotFoundError for ``what`` ``name``.

    local: how to point at a local copy (e.g. ``text_encoder.model=/path/to/x``); offline: the offline alternative.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # merits shows its own progress; weight-loading bars are noise
    try:
        return tuple(load(where) for load in loaders)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(
            f"cannot load {what} {name!r}: {str(e).splitlines()[0]}\n"
            f"  Give a local directory with its weights{local}, "
            f"download it once where a network is available (huggingface-cli download {name}), "
            f"or {offline}."
        ) from e
