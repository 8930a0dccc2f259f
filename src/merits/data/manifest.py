"""The one manifest format: a table with one row per utterance, whatever corpus it came from.

Columns (documented in docs/manifest.md):

required
    utterance_id     str   unique in the corpus
    conversation_id  str   utterances of one conversation share it
    turn             int   position in the conversation (unique per conversation; gaps allowed)
    split            str   train | validation | test
    text             str   transcript (may be empty only when the row has audio)
    label            str   one of ``Manifest.labels``, or empty for an unlabelled utterance
optional (empty when unknown)
    audio_path       str   absolute path of the audio (or video) file
    start, end       float seconds inside ``audio_path``; empty means the whole file
    speaker          str   kept for reference only: MERITS-L never uses speaker identities
    valence, arousal float continuous annotations in the corpus' own scale
    sentiment        str   a gold three-class sentiment (positive / negative / neutral) where the corpus has one

A manifest is saved as ``manifest.csv`` plus ``manifest.json`` (corpus name, label names, counts, what the
label map excluded on purpose, where it was built from).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from merits.errors import DataError

REQUIRED_COLUMNS = ("utterance_id", "conversation_id", "turn", "split", "text", "label")
OPTIONAL_COLUMNS = ("audio_path", "start", "end", "speaker", "valence", "arousal", "sentiment")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
SPLITS = ("train", "validation", "test")
# The class id of an unlabelled row (its label column is ""), everywhere: manifests, batches, predictions. It is
# PyTorch's default ignore_index, so the loss skips such rows as they are; "has a label" is always ``id >= 0``.
NO_LABEL = -100
_STRING_COLUMNS = ("utterance_id", "conversation_id", "split", "text", "label", "audio_path", "speaker", "sentiment")
_FLOAT_COLUMNS = ("start", "end", "valence", "arousal")
MAX_LISTED = 5  # how many offending rows an error message names

# characters that show nothing: a turn of only these (and whitespace) is empty, not a transcript
INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")


def is_blank(text: str) -> bool:
    """Nothing to read: empty, whitespace, or only zero-width characters."""
    return not INVISIBLE.sub("", text).strip()


def blank(texts: pd.Series) -> pd.Series:
    """:func:`is_blank` of every text of a column."""
    return texts.str.replace(INVISIBLE, "", regex=True).str.strip() == ""


def carve_validation(train_conversations, fraction: float, seed: int) -> set[str]:
    """Pick validation conversations among the training ones: whole conversations, never single utterances.

    Sorted then shuffled with a seeded generator, so the choice depends only on the conversation set and the seed.
    """
    if not 0 <= fraction < 1:
        raise DataError(f"validation_fraction must be in [0, 1); got {fraction}")
    conversations = sorted(train_conversations)
    if fraction == 0 or len(conversations) < 2:
        return set()
    random.Random(seed).shuffle(conversations)
    count = min(max(1, round(len(conversations) * fraction)), len(conversations) - 1)
    return set(conversations[:count])


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in str(text))


def _listing(values) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:MAX_LISTED])
    more = f" (and {len(values) - MAX_LISTED} more)" if len(values) > MAX_LISTED else ""
    return shown + more


@dataclass
class Manifest:
    """A corpus as a table of utterances plus the label names (class id = position in ``labels``)."""

    corpus: str
    labels: tuple[str, ...]
    table: pd.DataFrame
    source: str = ""
    excluded: dict[str, int] = field(default_factory=dict)  # label -> rows the label map dropped on purpose
    # label in the source -> class name ("" = unlabelled, kept as context) that the adapter applied; recorded so
    # that a run says how its classes were made
    label_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        self.table = normalise_table(self.table)

    # ------------------------------------------------------------------ checks
    def validate(self, check_audio: bool = False) -> "Manifest":
        """Raise DataError naming the first offending rows; return self when the manifest is sound."""
        t = self.table
        where = f"manifest of {self.corpus!r}"
        if t.empty:
            raise DataError(f"{where} has no utterances (source: {self.source or 'unknown'})")
        dup = t["utterance_id"][t["utterance_id"].duplicated(keep=False)]
        if len(dup):
            raise DataError(f"{where}: duplicate utterance ids: {_listing(dict.fromkeys(dup))}")
        bad_split = t.loc[~t["split"].isin(SPLITS), "utterance_id"]
        if len(bad_split):
            raise DataError(f"{where}: split must be one of {SPLITS}; offending utterances: {_listing(bad_split)}")
        control = t.loc[t["label"].map(_has_control)]
        if len(control):  # "anger\x00" prints like "anger" but would be a class of its own
            pairs = [f"{u} ({lab!r})" for u, lab in zip(control["utterance_id"], control["label"])]
            raise DataError(f"{where}: labels with control characters (a NUL byte, a tab, ...): {_listing(pairs)}")
        odd = [name for name in self.labels if _has_control(name)]
        if odd:
            raise DataError(f"{where}: class names with control characters (a NUL byte, a tab, ...): "
                            f"{[repr(n) for n in odd]}; clean the labels option")
        bad_label = t.loc[(t["label"] != "") & ~t["label"].isin(self.labels)]
        if len(bad_label):
            pairs = [f"{u} ({lab!r})" for u, lab in zip(bad_label["utterance_id"], bad_label["label"])]
            raise DataError(f"{where}: unknown labels (known: {list(self.labels)}): {_listing(pairs)}")
        no_content = t.loc[blank(t["text"]) & (t["audio_path"] == ""), "utterance_id"]
        if len(no_content):
            raise DataError(f"{where}: empty text and no audio for utterances: {_listing(no_content)}")
        dup_turn = t[t.duplicated(["conversation_id", "turn"], keep=False)]
        if len(dup_turn):
            pairs = [f"{c}#{k}" for c, k in zip(dup_turn["conversation_id"], dup_turn["turn"])]
            raise DataError(f"{where}: a turn index appears twice in one conversation: {_listing(pairs)}")
        mixed = t.groupby("conversation_id")["split"].nunique()
        if (mixed > 1).any():
            raise DataError(f"{where}: conversations spread over several splits: {_listing(mixed[mixed > 1].index)}")
        if check_audio:
            has = t[t["audio_path"] != ""]
            missing = [p for p in dict.fromkeys(has["audio_path"]) if not Path(p).is_file()]
            if missing:
                raise DataError(f"{where}: {len(missing)} audio files are missing: {_listing(missing)}")
        return self

    def require_labels(self, splits=SPLITS, unlabelled: str = "error") -> None:
        """Training needs labels in every split it uses. ``unlabelled="error"``: on every utterance; otherwise
        unlabelled turns are allowed (kept as conversation context) as long as each split has labelled ones."""
        t = self.table
        missing = t.loc[t["split"].isin(splits) & (t["label"] == ""), "utterance_id"]
        if len(missing) and unlabelled == "error":
            raise DataError(f"manifest of {self.corpus!r}: utterances without a label: {_listing(missing)} "
                            "(data.unlabelled=context keeps them as context, drop leaves them out)")
        for split in splits:
            if unlabelled != "error" and (t["split"] == split).any() and not ((t["split"] == split) & (t["label"] != "")).any():
                raise DataError(f"manifest of {self.corpus!r} has no labelled {split!r} utterance")
            if not (t["split"] == split).any():
                hint = (" (for your own data: carve it from train with the adapter option validation_fraction, e.g. "
                        "data.options.validation_fraction=0.1)") if split == "validation" else ""
                raise DataError(f"manifest of {self.corpus!r} has no {split!r} utterances{hint}")

    def label_problems(self) -> list[str]:
        """What is odd about the classes, one line each: names that differ only by case or spacing (two classes
        where the data meant one), classes with no training example (scored 0, learnt never)."""
        problems, seen = [], {}
        for name in self.labels:
            seen.setdefault(" ".join(str(name).split()).casefold(), []).append(name)
        for names in seen.values():
            if len(names) > 1:
                merge = ",".join(f"{n}:{names[0]}" for n in names[1:])
                problems.append(f"labels {names} differ only by case or spacing: they are {len(names)} classes; "
                                f"merge them with the adapter option label_map, e.g. -o label_map={merge}")
        train = self.table.loc[self.table["split"] == "train", "label"]
        empty = [name for name in self.labels if not (train == name).any()]
        if empty:
            where = {name: sorted(self.table.loc[self.table["label"] == name, "split"].unique()) for name in empty}
            problems.append("classes without a training example (the model can never predict them): "
                            + ", ".join(f"{n} (only in {'/'.join(w) or 'no split'})" for n, w in where.items())
                            + "; leave them out of the labels option, map them onto a class (label_map), or move "
                              "some of their conversations into train")
        present = sorted(set(self.table.loc[self.table["label"] != "", "label"]))
        if len(present) == 1:  # every score would be 100: nothing was learnt that a constant does not do
            problems.append(f"only one class ({present[0]!r}) in the whole corpus: every score is trivially 100; "
                            "check the label column or the label map")
        return problems

    def require_text(self) -> None:
        empty = self.table.loc[blank(self.table["text"]), "utterance_id"]
        if len(empty):
            raise DataError(
                f"manifest of {self.corpus!r}: empty transcripts for utterances {_listing(empty)}; "
                "transcribe the audio first (merits asr) or drop these rows"
            )

    # ------------------------------------------------------------------ views
    def split(self, name: str) -> pd.DataFrame:
        return self.table[self.table["split"] == name]

    def label_ids(self, table: pd.DataFrame | None = None):
        """Class ids (int64 numpy array) of the rows of ``table`` (default: all rows); NO_LABEL where unlabelled."""
        t = self.table if table is None else table
        index = {"": NO_LABEL, **{name: i for i, name in enumerate(self.labels)}}
        return t["label"].map(index).to_numpy(dtype="int64")

    def conversations(self, split: str) -> list[pd.DataFrame]:
        """The conversations of one split, each a table ordered by turn."""
        t = self.split(split)
        return [g for _, g in t.groupby("conversation_id", sort=False)]

    def subset(self, max_conversations: int | None) -> "Manifest":
        """Keep the first ``max_conversations`` conversations of every split (for quick runs and tests)."""
        if not max_conversations:
            return self
        parts = []
        for split in SPLITS:
            t = self.split(split)
            keep = list(dict.fromkeys(t["conversation_id"]))[:max_conversations]
            parts.append(t[t["conversation_id"].isin(keep)])
        return dataclasses.replace(self, table=pd.concat(parts))

    def select(self, utterance_ids) -> "Manifest":
        """The manifest restricted to ``utterance_ids`` (e.g. those with usable audio); order is kept."""
        keep = set(map(str, utterance_ids))
        return dataclasses.replace(self, table=self.table[self.table["utterance_id"].isin(keep)])

    def counts(self) -> dict:
        t = self.table
        return {
            "utterances": {s: int((t["split"] == s).sum()) for s in SPLITS},
            "conversations": {s: int(t.loc[t["split"] == s, "conversation_id"].nunique()) for s in SPLITS},
            "labels": {s: {lab: int(((t["split"] == s) & (t["label"] == lab)).sum()) for lab in self.labels} for s in SPLITS},
            "unlabelled": int((t["label"] == "").sum()),
            "with_audio": int((t["audio_path"] != "").sum()),
            "excluded_by_label_map": dict(self.excluded),
        }

    def report(self) -> str:
        """A human-readable summary: counts per split and label, and what was excluded on purpose."""
        c = self.counts()
        lines = [f"corpus {self.corpus} ({self.source})"]
        width = max([len(x) for x in self.labels] + [10])
        lines.append(f"  {'':{width}} " + " ".join(f"{s:>10}" for s in SPLITS))
        for lab in self.labels:
            lines.append(f"  {lab:{width}} " + " ".join(f"{c['labels'][s][lab]:>10}" for s in SPLITS))
        lines.append(f"  {'utterances':{width}} " + " ".join(f"{c['utterances'][s]:>10}" for s in SPLITS))
        lines.append(f"  {'dialogues':{width}} " + " ".join(f"{c['conversations'][s]:>10}" for s in SPLITS))
        if c["unlabelled"]:
            lines.append(f"  unlabelled utterances: {c['unlabelled']}")
        if c["with_audio"]:
            lines.append(f"  utterances with audio: {c['with_audio']}")
        if self.label_map:
            lines.append("  label map: " + ", ".join(f"{k} -> {v or '(unlabelled)'}" for k, v in self.label_map.items()))
        if self.excluded:
            lines.append("  excluded on purpose by the label map: " + ", ".join(f"{k} {v}" for k, v in self.excluded.items()))
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """Content hash: changes whenever a row, a label name or the label order changes."""
        h = hashlib.sha256(json.dumps([self.corpus, list(self.labels)]).encode())
        h.update(self.table.to_csv(index=False).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(directory / "manifest.csv", index=False)
        meta = {"corpus": self.corpus, "labels": list(self.labels), "source": self.source,
                "excluded": self.excluded, "label_map": self.label_map, "counts": self.counts(), "fingerprint": self.fingerprint()}
        (directory / "manifest.json").write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Manifest":
        directory = Path(directory)
        if not (directory / "manifest.csv").is_file() or not (directory / "manifest.json").is_file():
            raise DataError(f"{directory} holds no manifest (manifest.csv + manifest.json); run `merits prepare` first")
        meta = json.loads((directory / "manifest.json").read_text())
        table = pd.read_csv(directory / "manifest.csv", dtype=str, keep_default_na=False)
        return cls(meta["corpus"], tuple(meta["labels"]), table, meta.get("source", ""), meta.get("excluded", {}),
                   meta.get("label_map", {}))


def normalise_table(table: pd.DataFrame) -> pd.DataFrame:
    """Give a table exactly the manifest columns with their types, ordered by conversation then turn."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"manifest table lacks required columns {missing}; it has {list(table.columns)}")
    t = table.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in t.columns:
            t[col] = "" if col in _STRING_COLUMNS else float("nan")
    t = t[list(COLUMNS)]
    for col in _STRING_COLUMNS:
        t[col] = t[col].fillna("").astype(str)
    for col in _FLOAT_COLUMNS:
        t[col] = pd.to_numeric(t[col].replace("", float("nan")), errors="coerce").astype(float)
    turns = pd.to_numeric(t["turn"], errors="coerce")
    if turns.isna().any():
        raise DataError(f"non-integer turn index for utterances: {_listing(t.loc[turns.isna(), 'utterance_id'])}")
    t["turn"] = turns.astype("int64")
    # Stable order: conversations in order of first appearance, utterances by turn inside each.
    first = {c: i for i, c in enumerate(dict.fromkeys(t["conversation_id"]))}
    t = t.assign(_conv=t["conversation_id"].map(first)).sort_values(["_conv", "turn"], kind="stable")
    return t.drop(columns="_conv").reset_index(drop=True)
