"""Word error rate: the one place merits scores transcripts against references.

WER = (substitutions + deletions + insertions) / reference words, from a Levenshtein alignment of word lists.
The corpus figure sums edits and reference words over all utterances (it is NOT the mean of per-utterance WERs,
which would over-weight short utterances).

Normalisation (both sides, configurable): Unicode NFKC, lower-case, apostrophes removed inside words
("don't" -> "dont", so "don't" and "dont" match), every other punctuation or symbol character replaced by a
space ("well-known" -> "well known"), whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

APOSTROPHES = "'\u2019\u2018\u02bc`"


@dataclass(frozen=True)
class Normalizer:
    """How text is cleaned before words are compared."""

    lowercase: bool = True
    strip_punctuation: bool = True

    def __call__(self, text: str) -> list[str]:
        """``text`` -> its list of words."""
        text = unicodedata.normalize("NFKC", text or "")
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            text = re.sub(f"[{APOSTROPHES}]", "", text)
            # P* = punctuation, S* = symbols: a space, not nothing, so that "a/b" gives two words
            text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
        return text.split()


@dataclass
class Alignment:
    """Edit counts of one reference/hypothesis pair."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def ref_words(self) -> int:
        return self.hits + self.substitutions + self.deletions


def align(ref: list[str], hyp: list[str]) -> Alignment:
    """Minimum-edit alignment of two word lists (O(len(ref) * len(hyp)) dynamic programme with backtrace).

    On ties the backtrace prefers a match/substitution, then a deletion, then an insertion, so the split of the
    (unique) minimum into S/D/I is deterministic.
    """
    n, m = len(ref), len(hyp)
    # cost[i][j]: edits turning ref[:i] into hyp[:j]
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = i
    for j in range(1, m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        row, prev, r = cost[i], cost[i - 1], ref[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (r != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    out = Alignment()
    i, j = n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] == hyp[j - 1]:
                out.hits += 1
            else:
                out.substitutions += 1
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            out.deletions += 1
            i -= 1
        else:
            out.insertions += 1
            j -= 1
    return out


@dataclass
class UtteranceWER:
    utterance_id: str
    alignment: Alignment

    @property
    def wer(self) -> float | None:
        """None when the reference has no words (WER is undefined there; its insertions still count in the corpus)."""
        a = self.alignment
        return a.errors / a.ref_words if a.ref_words else None


@dataclass
class CorpusWER:
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_words: int = 0
    utterances: list[UtteranceWER] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """Sum of edits / sum of reference words; None when no reference has a word."""
        return self.errors / self.ref_words if self.ref_words else None

    def to_dict(self, per_utterance: bool = True) -> dict:
        out = {"wer": self.wer, "errors": self.errors, "substitutions": self.substitutions, "deletions": self.deletions,
               "insertions": self.insertions, "ref_words": self.ref_words, "utterances": len(self.utterances)}
        if per_utterance:
            out["per_utterance"] = [{"utterance_id": u.utterance_id, "wer": u.wer, "errors": u.alignment.errors,
                                     "ref_words": u.alignment.ref_words} for u in self.utterances]
        return out


def word_error_rate(refs, hyps, ids=None, normalizer: Normalizer | None = None) -> CorpusWER:
    """Corpus and per-utterance WER of parallel sequences of reference and hypothesis texts."""
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"word_error_rate: {len(refs)} references but {len(hyps)} hypotheses")
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(refs))]
    norm = normalizer or Normalizer()
    total = CorpusWER()
    for uid, ref, hyp in zip(ids, refs, hyps):
        a = align(norm(ref), norm(hyp))
        total.substitutions += a.substitutions
        total.deletions += a.deletions
        total.insertions += a.insertions
        total.ref_words += a.ref_words
        total.utterances.append(UtteranceWER(uid, a))
    return total


def wer(ref: str, hyp: str, normalizer: Normalizer | None = None) -> float | None:
    """WER of one pair (None for an empty reference)."""
    return word_error_rate([ref], [hyp], normalizer=normalizer).wer


def score_by_id(refs: dict[str, str], hyps: dict[str, str], normalizer: Normalizer | None = None) -> tuple[CorpusWER, list[str]]:
    """WER over the utterances of ``refs``; a reference without a hypothesis counts as an empty hypothesis
    (all its words deleted). Returns the score and the ids that had no hypothesis."""
    ids = list(refs)
    missing = [u for u in ids if u not in hyps]
    return word_error_rate([refs[u] for u in ids], [hyps.get(u, "") for u in ids], ids, normalizer), missing


def read_texts(path) -> dict[str, str]:
    """utterance id -> text from a manifest directory (or its manifest.csv), or a .csv / .jsonl file with the
    columns ``utterance_id`` and ``text``."""
    from pathlib import Path

    import pandas as pd

    from merits.errors import DataError

    p = Path(path)
    if p.is_dir():
        p = p / "manifest.csv"
    if not p.is_file():
        raise DataError(f"{path}: no such file or manifest directory (expected manifest.csv, .csv or .jsonl)")
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        t = pd.read_json(p, lines=True, dtype=False)
    elif p.suffix.lower() == ".csv":
        t = pd.read_csv(p, dtype=str, keep_default_na=False)
    else:
        raise DataError(f"{p}: expected a manifest directory, a .csv or a .jsonl file, got {p.suffix!r}")
    missing = [c for c in ("utterance_id", "text") if c not in t.columns]
    if missing:
        raise DataError(f"{p}: missing columns {missing}; it has {list(t.columns)}")
    ids = t["utterance_id"].astype(str)
    dup = ids[ids.duplicated()].tolist()
    if dup:
        raise DataError(f"{p}: duplicate utterance ids {dup[:5]}")
    return dict(zip(ids, t["text"].fillna("").astype(str)))
