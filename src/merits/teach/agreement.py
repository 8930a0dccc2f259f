"""How well a teacher's labels agree with a reference: the paper's "oracle" check.

The reference is either a gold three-class column (MELD's ``Sentiment``, kept as the manifest's ``sentiment``)
or continuous valence mapped to three classes by thresholds. The paper maps MSP-Podcast valence (1-7 scale) that
way without giving the thresholds; the default here splits the scale around its midpoint 4: valence < 3.5
negative, > 4.5 positive, 3.5-4.5 (inclusive) neutral, i.e. a neutral band of one scale point.

Per teacher (and prompt): overlap (% of compared utterances where both agree), overlap over every reference
utterance (an unusable teacher answer counts as a disagreement), Cohen's kappa and the confusion matrix
(rows: reference, columns: teacher, order negative / neutral / positive).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from merits.data.manifest import Manifest
from merits.errors import ConfigError, DataError
from merits.teach.label_store import LabelStore, join_labels
from merits.teach.prompt import SENTIMENTS


REFERENCES = ("auto", "sentiment", "valence")


@dataclass
class AgreementConfig:
    reference: str = "auto"                    # auto | sentiment | valence (auto: sentiment column if filled)
    negative_below: float = 3.5                # valence < this -> negative (MSP-Podcast 1-7 scale)
    positive_above: float = 4.5                # valence > this -> positive; in between (inclusive) -> neutral

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ConfigError(f"agreement.reference: {self.reference!r} is not auto | sentiment | valence")
        if self.negative_below > self.positive_above:
            raise ConfigError("agreement.negative_below must not exceed agreement.positive_above")


def valence_to_sentiment(valence, negative_below: float = 3.5, positive_above: float = 4.5) -> pd.Series:
    """Continuous valence -> negative (< negative_below) / positive (> positive_above) / neutral; "" when unknown."""
    v = pd.to_numeric(pd.Series(valence), errors="coerce")
    out = pd.Series("neutral", index=v.index)
    out[v < negative_below] = "negative"
    out[v > positive_above] = "positive"
    out[v.isna()] = ""
    return out


def confusion(reference, predicted, classes=SENTIMENTS) -> np.ndarray:
    """(C, C) counts, rows = reference class, columns = predicted class; pairs outside ``classes`` are ignored."""
    index = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for r, p in zip(reference, predicted):
        if r in index and p in index:
            m[index[r], index[p]] += 1
    return m


def cohen_kappa(matrix: np.ndarray) -> float:
    """Cohen's kappa from a confusion matrix: (p_o - p_e) / (1 - p_e); NaN when it is undefined (p_e = 1)."""
    m = np.asarray(matrix, dtype=float)
    n = m.sum()
    if n == 0:
        return math.nan
    observed = np.trace(m) / n
    expected = float((m.sum(1) * m.sum(0)).sum()) / n ** 2  # chance agreement from the two marginals
    return math.nan if expected == 1 else (observed - expected) / (1 - expected)


@dataclass
class TeacherAgreement:
    teacher: str
    prompt_hash: str
    reference_n: int         # utterances with a reference label
    compared_n: int          # ... of which the teacher gave a usable label
    unusable: dict           # status -> count among the reference utterances (invalid / error / missing / stale)
    overlap: float           # % agreement over the compared utterances
    overlap_all: float       # % agreement over every reference utterance (unusable answers count as wrong)
    kappa: float             # Cohen's kappa over the compared utterances
    confusion: list          # rows reference, columns teacher, in SENTIMENTS order


def compare(teacher: str, prompt_hash: str, reference: pd.Series, joined: pd.DataFrame) -> TeacherAgreement:
    """Agreement of one teacher's joined labels (``join_labels`` output) with ``reference`` (aligned by row)."""
    has_ref = reference != ""
    status = joined.loc[has_ref, "teacher_label_status"]
    usable = has_ref & (joined["teacher_label_status"] == "ok")
    m = confusion(reference[usable], joined.loc[usable, "teacher_label"])
    agree, compared, ref_n = int(np.trace(m)), int(m.sum()), int(has_ref.sum())
    return TeacherAgreement(
        teacher, prompt_hash, ref_n, compared,
        {k: int(v) for k, v in status[status != "ok"].value_counts().items()},
        100.0 * agree / compared if compared else math.nan,
        100.0 * agree / ref_n if ref_n else math.nan,
        cohen_kappa(m), m.tolist())


def reference_labels(manifest: Manifest, reference: str = "auto", negative_below: float = 3.5,
                     positive_above: float = 4.5) -> tuple[pd.Series, str]:
    """(three-class reference per manifest row, "" where unknown; a description of where it came from)."""
    t = manifest.table
    has_sentiment = t["sentiment"].isin(SENTIMENTS).any()
    if reference == "auto":
        reference = "sentiment" if has_sentiment else "valence"
    if reference == "sentiment":
        if not has_sentiment:
            raise DataError(f"manifest of {manifest.corpus!r} has no gold sentiment column to compare with; "
                            "use agreement.reference=valence")
        return t["sentiment"].where(t["sentiment"].isin(SENTIMENTS), ""), "gold sentiment column"
    if reference == "valence":
        if t["valence"].isna().all():
            raise DataError(f"manifest of {manifest.corpus!r} has no valence to compare with; "
                            "use agreement.reference=sentiment")
        return (valence_to_sentiment(t["valence"], negative_below, positive_above),
                f"valence < {negative_below} negative, > {positive_above} positive, else neutral")
    raise DataError(f"agreement reference must be auto | sentiment | valence, got {reference!r}")


@dataclass
class AgreementTable:
    corpus: str
    reference: str
    rows: list[TeacherAgreement]

    def to_dict(self) -> dict:
        return {"corpus": self.corpus, "reference": self.reference, "classes": list(SENTIMENTS),
                "teachers": [asdict(r) for r in self.rows]}

    def to_markdown(self) -> str:
        lines = [f"Teacher agreement on {self.corpus} (reference: {self.reference})", "",
                 "| teacher | prompt | reference n | labelled | overlap % | overlap % (all) | Cohen's kappa | unusable |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            unusable = ", ".join(f"{k} {v}" for k, v in sorted(r.unusable.items())) or "-"
            lines.append(f"| {r.teacher} | {r.prompt_hash} | {r.reference_n} | {r.compared_n} | {r.overlap:.1f} | "
                         f"{r.overlap_all:.1f} | {r.kappa:.3f} | {unusable} |")
        for r in self.rows:
            lines += ["", f"Confusion of {r.teacher} ({r.prompt_hash}): rows reference, columns teacher", "",
                      "| | " + " | ".join(SENTIMENTS) + " |", "|---" * (len(SENTIMENTS) + 1) + "|"]
            lines += [f"| {c} | " + " | ".join(str(x) for x in row) + " |" for c, row in zip(SENTIMENTS, r.confusion)]
        return "\n".join(lines)


def agreement_table(manifest: Manifest, store: LabelStore, reference: str = "auto", negative_below: float = 3.5,
                    positive_above: float = 4.5, teachers=None) -> AgreementTable:
    """Agreement of every teacher (and prompt) stored for the manifest's corpus, or of ``teachers`` (names)."""
    ref, description = reference_labels(manifest, reference, negative_below, positive_above)
    stored = store.summary(manifest.corpus)
    if teachers:
        stored = stored[stored["teacher"].isin(teachers)]
    if stored.empty:
        raise DataError(f"label store {store.path} holds no labels for corpus {manifest.corpus!r}"
                        + (f" from teachers {list(teachers)}" if teachers else "") + "; run `merits teach` first")
    rows = [compare(name, prompt_hash, ref, join_labels(manifest, store, name, prompt_hash))
            for name, prompt_hash in zip(stored["teacher"], stored["prompt_hash"])]
    return AgreementTable(manifest.corpus, description, rows)
