"""Conversation context inside the utterance encoder (not in the paper; EmoBERTa's input form, any tokenizer).

With ``stage1_text.context`` set, Stage I text reads each utterance inside a window of its conversation, as one
input of at most ``max_tokens`` tokens, with the current turn marked by the tokenizer's own pair separators:

    BERT / MiniLM:        [CLS] past turns [SEP] current turn [SEP] future turns [SEP]
    RoBERTa / MPNet:      <s> past turns </s></s> current turn </s></s> future turns </s>

(the tokenizer's template for a pair of segments, with the current turn as a segment of its own). Each turn is
``"<speaker>: <text>"`` with ``speakers: true`` where the manifest names a speaker, else its text. Only the current
turn is trained and scored; the context turns may be unlabelled. Mean pooling averages the current turn's tokens
alone (the context reaches them through attention); ``cls`` pooling takes the first token as before.

Truncation never cuts the current turn for context: the neighbours are taken nearest first (past before future at
equal distance) while they fit; the first that does not fit is trimmed on its far side (a past turn keeps its end,
a future turn its start) and everything farther is dropped. Only a current turn longer than the whole budget is cut.
``future: 0`` is the causal form that live use replays exactly; a run trained with future turns reads none online.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from merits.errors import ConfigError


@dataclass
class TextContextConfig:
    past: int = 0            # earlier turns of the conversation read before the current one
    future: int = 0          # later turns read after it (0: the causal, live form)
    speakers: bool = False   # prefix every turn with its speaker ("Joey: ...") where the manifest has a speaker column
    max_tokens: int = 256    # the whole input, special tokens included (MiniLM and MPNet read at most 512)

    def __post_init__(self) -> None:
        if self.past < 0 or self.future < 0:
            raise ConfigError(f"context: past ({self.past}) and future ({self.future}) must be 0 or more turns")
        if self.max_tokens < 8:
            raise ConfigError(f"context.max_tokens: {self.max_tokens} leaves no room for a turn (give 8 or more)")

    @property
    def enabled(self) -> bool:
        """False: the paper's utterance-only Stage I (inputs exactly as without this option)."""
        return bool(self.past or self.future or self.speakers)

    def causal(self) -> "TextContextConfig":
        """What a live system can read: the same window without the turns not said yet."""
        return replace(self, future=0)

    def describe(self) -> str:
        """A short name for tables and summaries: ``past 3, future 1, speakers`` or ``utterance only``."""
        if not self.enabled:
            return "utterance only"
        parts = [f"past {self.past}"] if self.past else []
        parts += [f"future {self.future}"] if self.future else []
        parts += ["speakers"] if self.speakers else []
        return ", ".join(parts)


@dataclass
class EncodedTurns:
    """Token ids of every manifest row's input (row order), and where its own turn lies in it."""

    ids: list[list[int]]
    spans: list[tuple[int, int]] | None = None  # [start, end) of the current turn per input; None: the whole input

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.ids])


def segment_template(tokenizer) -> tuple[list[int], list[int], list[int]]:
    """The special tokens around a pair of segments: (before the first, between them, after the second)."""
    enc = tokenizer("a", "b", return_special_tokens_mask=True)  # a pair of one-token segments
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    words = [i for i, m in enumerate(special) if not m]  # the two segments' positions
    first, second = words[0], words[-1]
    if any(not m for m in special[first + 1:second]):
        raise ValueError(f"cannot read the pair template of {type(tokenizer).__name__}: {ids}")
    return ids[:first], ids[first + 1:second], ids[second + 1:]


def turn_texts(table: pd.DataFrame, speakers: bool) -> list[str]:
    """Each row's turn as the encoder reads it: its text, ``"<speaker>: <text>"`` where a speaker is named."""
    texts = table["text"].astype(str).tolist()
    if not speakers or "speaker" not in table:
        return texts
    names = table["speaker"].fillna("").astype(str).str.strip().tolist()
    return [f"{s}: {t}" if s else t for s, t in zip(names, texts)]


def has_speakers(table: pd.DataFrame) -> bool:
    return "speaker" in table and bool((table["speaker"].fillna("").astype(str).str.strip() != "").any())


def encode_turns(tokenizer, table: pd.DataFrame, context: TextContextConfig | None, max_length: int) -> EncodedTurns:
    """Every row's input: the utterance alone (truncated to ``max_length``), or its conversation window."""
    if context is None or not context.enabled:
        return EncodedTurns(tokenizer(table["text"].astype(str).tolist(), truncation=True, max_length=max_length)["input_ids"])
    pieces = tokenizer(turn_texts(table, context.speakers), add_special_tokens=False)["input_ids"]
    before, between, after = segment_template(tokenizer)
    room = context.max_tokens - len(before) - 2 * len(between) - len(after)  # tokens for the turns themselves
    ids: list[list[int]] = [[] for _ in range(len(table))]
    spans: list[tuple[int, int]] = [(0, 0)] * len(table)
    positions = pd.DataFrame({"conversation": table["conversation_id"].to_numpy(), "turn": table["turn"].to_numpy(),
                              "row": np.arange(len(table))})
    for _, g in positions.groupby("conversation", sort=False):
        rows = g.sort_values("turn", kind="stable")["row"].to_numpy()  # the conversation's rows in turn order
        for k, row in enumerate(rows):
            current = pieces[row][:room]
            past, future = _window(pieces, rows, k, context.past, context.future, room - len(current))
            start = len(before) + len(past) + len(between)
            ids[row] = before + past + between + current + between + future + after
            spans[row] = (start, start + len(current))
    return EncodedTurns(ids, spans)


def _window(pieces, rows, k: int, n_past: int, n_future: int, budget: int) -> tuple[list[int], list[int]]:
    """The past and future tokens around turn ``k`` within ``budget`` tokens: nearest neighbours first, the first
    that does not fit trimmed on its far side, the farther ones dropped."""
    taken: dict[str, list[list[int]]] = {"past": [], "future": []}  # nearest first
    for d in range(1, max(n_past, n_future) + 1):
        for side, j, n in (("past", k - d, n_past), ("future", k + d, n_future)):
            if d > n or not 0 <= j < len(rows):
                continue
            tokens = pieces[rows[j]]
            if len(tokens) > budget:  # the farthest turn kept: trimmed to what is left, the rest dropped
                if budget > 0:
                    taken[side].append(tokens[len(tokens) - budget:] if side == "past" else tokens[:budget])
                return _join(taken["past"][::-1]), _join(taken["future"])
            taken[side].append(tokens)
            budget -= len(tokens)
    return _join(taken["past"][::-1]), _join(taken["future"])


def _join(turns: list[list[int]]) -> list[int]:
    return [t for turn in turns for t in turn]
