"""CMU-MOSI adapter (name ``mosi``): binary sentiment of the opinion segments of 93 monologue videos.

Two inputs are accepted:

(a) the utterance table (``mosi_utterances.csv``: ``utt_id, video_id, sclstm_split, std_split, text, text_lower,
    binary_label, sentiment, a0..a72``), given as the file or a folder holding it;
(b) the raw CMU release: ``Transcript/Segmented/<video>.annotprocessed`` (lines ``<n>_DELIM_<text>``),
    ``Audio/WAV_16000/Segmented/<video>_<n>.wav`` and a labels CSV (option ``labels_file``, columns
    ``segment_id,sentiment``; the table above also works as a labels file).

A conversation is a video; its turns are the segment numbers. Labels: sentiment < 0 negative, >= 0 positive
(``binary_label`` where the continuous score is missing). Splits are video lists, committed as data in
``splits/mosi_poria.json`` (default: Poria et al. 2017, validation carved from the training videos by video)
and ``splits/mosi_standard.json`` (CMU-SDK). The 73 acoustic features are not part of the manifest: other code
reads them keyed by utterance id, which is the table's ``utt_id``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest, _listing, carve_validation
from merits.errors import DataError

LABELS = ("negative", "positive")
TABLE_NAME = "mosi_utterances.csv"
SPLITS_DIR = Path(__file__).parent / "splits"
SPLIT_FILES = {"poria": "mosi_poria.json", "standard": "mosi_standard.json"}
# Split columns of the table and how their values map to manifest splits.
SPLIT_COLUMNS = {
    "poria": ("sclstm_split", {"train": "train", "test": "test"}),
    "standard": ("std_split", {"train": "train", "dev": "validation", "valid": "validation",
                               "validation": "validation", "test": "test"}),
}
EXPECTED_UTTERANCES = 2199
TRANSCRIPTS = Path("Transcript") / "Segmented"
AUDIO = Path("Audio") / "WAV_16000" / "Segmented"
_SEGMENT_LINE = re.compile(r"^(?P<n>\d+)_DELIM_(?P<text>.*)$")


# ---------------------------------------------------------------------------------------------- inputs
def _segment_number(utt_ids: pd.Series, videos: pd.Series, where: str) -> pd.Series:
    """Turn index = the number after the video id in ``<video>_<n>`` (video ids may contain '_')."""
    head = utt_ids.str.rsplit("_", n=1).str[0]
    tail = pd.to_numeric(utt_ids.str.rsplit("_", n=1).str[-1], errors="coerce")
    bad = utt_ids[tail.isna() | (head != videos)]
    if len(bad):
        raise DataError(f"{where}: utterance ids are not <video_id>_<segment number>: {_listing(bad)}")
    return tail.astype(int)


def _read_table(path: Path) -> pd.DataFrame:
    """The utterance table as rows of (utterance_id, video, turn, text, sentiment, binary, split columns)."""
    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = ["utt_id", "video_id"]
    missing = [c for c in needed if c not in t.columns]
    if "text" not in t.columns and "text_lower" not in t.columns:
        missing.append("text or text_lower")
    if "sentiment" not in t.columns and "binary_label" not in t.columns:
        missing.append("sentiment or binary_label")
    if missing:
        raise DataError(f"{path}: not a CMU-MOSI utterance table, missing columns {missing}")
    # ``text`` (the transcript of Poria et al., complete for all rows) lower-cased: the raw release's transcripts
    # are lower case and an all-capitals sentence is not what a cased text encoder expects. ``text_lower`` comes
    # from another transcription (its segment boundaries differ by a word in 244 rows, and it is empty in 4),
    # so it is only the fallback where ``text`` is absent or empty.
    primary = t["text"].str.lower() if "text" in t.columns else pd.Series("", index=t.index)
    text = primary.where(primary.str.strip() != "", t.get("text_lower", ""))
    return pd.DataFrame({
        "utterance_id": t["utt_id"].str.strip(),
        "video": t["video_id"].str.strip(),
        "turn": _segment_number(t["utt_id"].str.strip(), t["video_id"].str.strip(), str(path)),
        "text": text.map(lambda s: " ".join(s.split())),
        "sentiment": t.get("sentiment", ""),
        "binary": t.get("binary_label", ""),
        **{col: t[col].str.strip() for col, _ in SPLIT_COLUMNS.values() if col in t.columns},
    })


def _read_transcripts(root: Path) -> pd.DataFrame:
    """All segments of ``Transcript/Segmented/*.annotprocessed``; a line of another shape is an error."""
    rows, bad = [], []
    for path in sorted((root / TRANSCRIPTS).glob("*.annotprocessed")):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            m = _SEGMENT_LINE.match(line.strip())
            if not m:
                bad.append(f"{path.name}:{number}")
                continue
            video = path.stem
            rows.append({"utterance_id": f"{video}_{int(m['n'])}", "video": video, "turn": int(m["n"]),
                         "text": " ".join(m["text"].split())})
    if bad:
        raise DataError(f"{root / TRANSCRIPTS}: lines not of the form <n>_DELIM_<text>: {_listing(bad)}")
    if not rows:
        raise DataError(f"{root / TRANSCRIPTS} holds no *.annotprocessed segment lines")
    return pd.DataFrame(rows)


def _read_labels(labels_file) -> pd.DataFrame:
    """Labels for the raw layout: ``segment_id`` (or ``utt_id``) and ``sentiment`` (or ``binary_label``)."""
    if labels_file is None:
        raise DataError(
            "the raw CMU-MOSI layout needs labels: pass labels_file=<csv with columns segment_id,sentiment> "
            f"(the utterance table {TABLE_NAME} also works)"
        )
    path = Path(labels_file)
    if not path.is_file():
        raise DataError(f"CMU-MOSI labels file {path} does not exist")
    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    key = "segment_id" if "segment_id" in t.columns else "utt_id" if "utt_id" in t.columns else None
    if key is None or not {"sentiment", "binary_label"} & set(t.columns):
        raise DataError(f"{path}: a labels file needs columns segment_id,sentiment; it has {list(t.columns)}")
    labels = pd.DataFrame({"utterance_id": t[key].str.strip(), "sentiment": t.get("sentiment", ""),
                           "binary": t.get("binary_label", "")})
    dup = labels["utterance_id"][labels["utterance_id"].duplicated(keep=False)]
    if len(dup):
        raise DataError(f"{path}: segments labelled twice: {_listing(dict.fromkeys(dup))}")
    return labels


def _read_raw(root: Path, labels_file) -> pd.DataFrame:
    """Segments of the raw release joined with their labels and wav files."""
    segments = _read_transcripts(root)
    labels = _read_labels(labels_file)
    known = set(labels["utterance_id"])
    unlabelled = [u for u in segments["utterance_id"] if u not in known]
    if unlabelled:
        raise DataError(f"{labels_file}: no label for {len(unlabelled)} segments: {_listing(unlabelled)}")
    present = set(segments["utterance_id"])
    orphans = [u for u in labels["utterance_id"] if u not in present]
    if orphans:
        raise DataError(f"{labels_file}: labels for segments absent from {root / TRANSCRIPTS}: {_listing(orphans)}")
    segments = segments.merge(labels, on="utterance_id", how="left")
    if (root / AUDIO).is_dir():
        wavs = [root / AUDIO / f"{u}.wav" for u in segments["utterance_id"]]
        missing = [str(p) for p in wavs if not p.is_file()]
        if missing:
            raise DataError(f"CMU-MOSI: {len(missing)} segment wav files are missing: {_listing(missing)}")
        segments["audio_path"] = [str(p.resolve()) for p in wavs]
    return segments


# ---------------------------------------------------------------------------------------------- labels, splits
def _labels(rows: pd.DataFrame, where: str) -> tuple[pd.Series, pd.Series]:
    """(label, continuous score): the score's sign decides; ``binary_label`` only where the score is missing."""
    score = pd.to_numeric(rows["sentiment"].replace("", float("nan")), errors="coerce")
    binary = pd.to_numeric(rows["binary"].replace("", float("nan")), errors="coerce")
    bad_binary = rows.loc[binary.notna() & ~binary.isin([0, 1]), "utterance_id"]
    if len(bad_binary):
        raise DataError(f"{where}: binary_label must be 0 or 1: {_listing(bad_binary)}")
    unlabelled = rows.loc[score.isna() & binary.isna(), "utterance_id"]
    if len(unlabelled):
        raise DataError(f"{where}: neither a sentiment score nor a binary label for: {_listing(unlabelled)}")
    positive = (score >= 0).where(score.notna(), binary == 1)
    return positive.map({True: "positive", False: "negative"}), score


def _committed_split(split: str) -> dict:
    return json.loads((SPLITS_DIR / SPLIT_FILES[split]).read_text())


def _video_splits(rows: pd.DataFrame, split: str, where: str) -> dict[str, str]:
    """Video -> split, from the table's split column when present, else from the committed video lists."""
    column, mapping = SPLIT_COLUMNS[split]
    if column in rows.columns:
        per_video = rows.groupby("video", sort=False)[column].agg(lambda s: sorted(set(s)))
        mixed = per_video[per_video.map(len) > 1]
        if len(mixed):
            raise DataError(f"{where}: videos with several {column} values: {_listing(mixed.index)}")
        values = per_video.map(lambda s: s[0])
        unknown = values[~values.isin(list(mapping))]
        if len(unknown):
            raise DataError(f"{where}: {column} must be one of {sorted(mapping)}; videos: {_listing(unknown.index)}")
        return {video: mapping[value] for video, value in values.items()}
    lists = _committed_split(split)
    assignment = {video: name for name in ("train", "validation", "test") for video in lists.get(name, [])}
    unknown = [v for v in dict.fromkeys(rows["video"]) if v not in assignment]
    if unknown:
        raise DataError(f"{where}: videos not in the committed {split} split {SPLIT_FILES[split]}: {_listing(unknown)}")
    return assignment


def _check_counts(table: pd.DataFrame, split: str, where: str) -> None:
    """The full release has 2199 segments, and the committed splits record their utterance counts."""
    if len(table) != EXPECTED_UTTERANCES:
        raise DataError(f"{where}: {len(table)} utterances, CMU-MOSI has {EXPECTED_UTTERANCES} "
                        "(pass strict_counts=false for a subset)")
    expected = _committed_split(split)["utterances"]
    actual = table["split"].value_counts().to_dict()
    if split == "poria":
        actual = {"train": actual.get("train", 0) + actual.get("validation", 0), "test": actual.get("test", 0)}
    if any(actual.get(k, 0) != v for k, v in expected.items()):
        raise DataError(f"{where}: {split} split sizes {actual} differ from the published {expected}")


# ---------------------------------------------------------------------------------------------- entry point
def _locate(root) -> tuple[str, Path]:
    """('table', csv path) or ('raw', release folder); say what was expected otherwise."""
    if root is None:
        raise DataError(f"CMU-MOSI needs a root: the {TABLE_NAME} table (or its folder) or the raw CMU release folder")
    root = Path(root)
    if root.is_file():
        return "table", root
    if not root.is_dir():
        raise DataError(f"CMU-MOSI root {root} does not exist")
    if (root / TABLE_NAME).is_file():
        return "table", root / TABLE_NAME
    if (root / TRANSCRIPTS).is_dir():
        return "raw", root
    raise DataError(
        f"CMU-MOSI root {root} holds neither {TABLE_NAME} nor the raw release folder {TRANSCRIPTS} "
        f"(with {AUDIO} and a labels_file)"
    )


def build(root=None, split: str = "poria", validation_fraction: float = 0.2, split_seed: int = 0,
          labels_file=None, strict_counts: bool = True) -> Manifest:
    """Read CMU-MOSI into a binary manifest (conversation = video, turn = segment number).

    split: "poria" (Poria et al. 2017: 62 training videos, 31 test videos; ``validation_fraction`` of the
    training videos, chosen with ``split_seed``, become validation) or "standard" (CMU-SDK train/valid/test).
    labels_file: labels for the raw layout (csv ``segment_id,sentiment``). strict_counts: require the 2199
    utterances and the published split sizes (False for a subset).
    """
    if split not in SPLIT_FILES:
        raise DataError(f"CMU-MOSI split must be one of {sorted(SPLIT_FILES)}; got {split!r}")
    kind, path = _locate(root)
    rows = _read_table(path) if kind == "table" else _read_raw(path, labels_file)
    where = str(path)
    labels, score = _labels(rows, where)
    video_split = _video_splits(rows, split, where)
    if split == "poria":
        train_videos = [v for v, s in video_split.items() if s == "train"]
        for video in carve_validation(train_videos, float(validation_fraction), int(split_seed)):
            video_split[video] = "validation"
    table = pd.DataFrame({
        "utterance_id": rows["utterance_id"],
        "conversation_id": rows["video"],
        "turn": rows["turn"],
        "split": rows["video"].map(video_split),
        "text": rows["text"],
        "label": labels,
        "audio_path": rows.get("audio_path", ""),
        "valence": score,
    })
    if strict_counts:
        _check_counts(table, split, where)
    return Manifest("mosi", LABELS, table, where).validate()
