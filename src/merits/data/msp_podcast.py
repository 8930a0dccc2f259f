"""MSP-Podcast adapter (name ``msp_podcast``): ``labels_consensus.csv`` plus optional audio and transcripts.

Layouts accepted (``root``): the release folder holding ``Labels/labels_consensus.csv``, ``Audios/<FileName>`` and
optionally ``Transcripts/<stem>.txt``; a flat folder holding ``labels_consensus.csv`` directly (as the MSP-format
fixture under ``shared/data/msp_format``, which has no audio); or the CSV file itself.

A file name ``<recording>_<segment>.wav`` (``MSP-PODCAST_0001_0008.wav``, ``001-105.1-2_14.wav``) gives the
conversation (the recording: everything before the last ``_``) and the turn (the segment number). Continuous
valence (EmoVal) and arousal (EmoAct) are kept in the corpus' 1-7 scale. The categorical consensus (EmoClass) is
mapped to four classes like IEMOCAP by default; the other codes are dropped on purpose and counted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest, _listing
from merits.errors import DataError

log = logging.getLogger("merits")

LABELS_NAME = "labels_consensus.csv"
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "Split_Set")
# EmoClass consensus codes of the release.
CODES = {"A": "anger", "S": "sadness", "H": "happiness", "U": "surprise", "F": "fear", "D": "disgust",
         "C": "contempt", "N": "neutral", "O": "other", "X": "no agreement"}
LABEL_MAPS = {
    "four": {"A": "anger", "H": "happiness", "S": "sadness", "N": "neutral"},
    "all": {"A": "anger", "H": "happiness", "S": "sadness", "N": "neutral",
            "U": "surprise", "F": "fear", "D": "disgust", "C": "contempt"},
}
SPLIT_SETS = {"Train": "train", "Development": "validation"}
_TEST_SET = re.compile(r"^Test\d+$")
_MISSING = {"", "na", "nan", "none", "null"}  # how an absent Split_Set is written


def _locate(root) -> tuple[Path, Path]:
    """(labels csv, release folder that holds Audios/ and Transcripts/)."""
    if root is None:
        raise DataError("MSP-Podcast needs a root: the release folder (Labels/labels_consensus.csv, Audios/)")
    root = Path(root)
    if root.is_file():
        base = root.parent.parent if root.parent.name == "Labels" else root.parent
        return root, base
    if not root.is_dir():
        raise DataError(f"MSP-Podcast root {root} does not exist")
    for candidate in (root / "Labels" / LABELS_NAME, root / LABELS_NAME):
        if candidate.is_file():
            return candidate, root
    raise DataError(f"MSP-Podcast root {root} holds neither Labels/{LABELS_NAME} nor {LABELS_NAME}")


def _read_labels(path: Path) -> pd.DataFrame:
    t = pd.read_csv(path, dtype=str, keep_default_na=False)
    t.columns = [c.strip() for c in t.columns]
    missing = [c for c in COLUMNS if c not in t.columns]
    if missing:
        raise DataError(f"{path}: not an MSP-Podcast labels file, missing columns {missing}; it has {list(t.columns)}")
    t = t.apply(lambda col: col.str.strip())
    dup = t["FileName"][t["FileName"].duplicated(keep=False)]
    if len(dup):
        raise DataError(f"{path}: duplicate FileName rows: {_listing(dict.fromkeys(dup))}")
    unknown = t[~t["EmoClass"].isin(list(CODES))]
    if len(unknown):
        pairs = [f"{f} ({c!r})" for f, c in zip(unknown["FileName"], unknown["EmoClass"])]
        raise DataError(f"{path}: unknown EmoClass codes (known: {sorted(CODES)}): {_listing(pairs)}")
    return t


def _label_map(label_map) -> dict[str, str]:
    """"four" (default), "all" (the eight named emotions) or a dict code -> label name."""
    if isinstance(label_map, dict):
        bad = [c for c in label_map if c not in CODES]
        if bad:
            raise DataError(f"MSP-Podcast label_map names unknown EmoClass codes {bad}; known: {sorted(CODES)}")
        return {str(k): str(v) for k, v in label_map.items()}
    if label_map not in LABEL_MAPS:
        raise DataError(f"MSP-Podcast label_map must be one of {sorted(LABEL_MAPS)} or a dict; got {label_map!r}")
    return LABEL_MAPS[label_map]


def _recording_and_segment(names: pd.Series, where: Path) -> tuple[pd.Series, pd.Series]:
    """``<recording>_<segment>.<ext>`` -> (recording, segment number)."""
    stems = names.map(lambda n: Path(n).stem)
    parts = stems.str.rsplit("_", n=1)
    segment = pd.to_numeric(parts.str[-1].where(parts.map(len) == 2), errors="coerce")
    bad = names[segment.isna()]
    if len(bad):
        raise DataError(f"{where}: FileName not of the form <recording>_<segment number>.wav: {_listing(bad)}")
    return parts.str[0], segment.astype(int)


def _splits(raw: pd.Series, test_sets, unknown_split, where: Path) -> tuple[pd.Series, dict[str, int], int]:
    """Manifest split per row (None = left out), the test-set rows left out, and the rows without a Split_Set."""
    test_sets = tuple(s.strip() for s in test_sets.split(",")) if isinstance(test_sets, str) else tuple(test_sets)
    absent = raw.str.lower().isin(_MISSING)
    odd = raw[~absent & ~raw.isin(list(SPLIT_SETS)) & ~raw.str.match(_TEST_SET)]
    if len(odd):
        raise DataError(f"{where}: unknown Split_Set values {_listing(dict.fromkeys(odd))}; "
                        f"expected {sorted(SPLIT_SETS)}, Test1, Test2, ... or NA")
    if absent.any() and unknown_split is None:
        raise DataError(f"{where}: {int(absent.sum())} rows have no Split_Set (lines {_listing(raw[absent].index + 2)}); "
                        "pass unknown_split=train|validation|test to place them")
    if unknown_split is not None and unknown_split not in ("train", "validation", "test"):
        raise DataError(f"MSP-Podcast unknown_split must be train, validation or test; got {unknown_split!r}")
    split = raw.map(lambda s: SPLIT_SETS.get(s, "test" if s in test_sets else None))
    split[absent] = unknown_split
    left_out = raw[~absent & split.isna()].value_counts()
    return split, {f"Split_Set={k}": int(v) for k, v in left_out.items()}, int(absent.sum())


def _scores(t: pd.DataFrame, column: str, where: Path) -> pd.Series:
    """A continuous annotation as floats; an empty cell is unknown, anything else unparsable is an error."""
    values = pd.to_numeric(t[column].where(~t[column].str.lower().isin(_MISSING)), errors="coerce")
    bad = t.loc[values.isna() & ~t[column].str.lower().isin(_MISSING), "FileName"]
    if len(bad):
        raise DataError(f"{where}: non-numeric {column} for: {_listing(bad)}")
    return values


def _transcripts(folder: Path, stems: pd.Series, require: bool) -> list[str]:
    """Text of ``Transcripts/<stem>.txt`` per row; a missing file is an error unless ``require`` is False."""
    paths = [folder / f"{s}.txt" for s in stems]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing and require:
        raise DataError(f"MSP-Podcast: {len(missing)} transcripts are missing: {_listing(missing)} "
                        "(pass require_transcripts=false to keep those rows with empty text)")
    return [" ".join(p.read_text(encoding="utf-8", errors="replace").split()) if p.is_file() else "" for p in paths]


def build(root=None, label_map="four", test_sets=("Test1", "Test2"), unknown_split: str | None = "train",
          check_audio: bool | None = None, require_transcripts: bool = True) -> Manifest:
    """Read MSP-Podcast labels (and transcripts where present) into a manifest.

    label_map: "four" (anger, happiness, sadness, neutral; the rest counted in ``excluded``), "all" (the eight
    named emotions; O and X excluded) or a dict EmoClass code -> label. test_sets: which Split_Set values
    TestN form the test split (rows of the others are left out and counted as ``Split_Set=TestN``).
    unknown_split: where rows without a Split_Set (NA) go; None makes them an error. check_audio: require
    every ``Audios/<FileName>`` (default: when the Audios folder exists); audio_path always names the expected
    file so that a labels-only copy still gives valid rows. require_transcripts: with a Transcripts folder,
    a missing transcript is an error unless False.
    """
    labels_path, base = _locate(root)
    mapping = _label_map(label_map)
    t = _read_labels(labels_path)
    recording, segment = _recording_and_segment(t["FileName"], labels_path)
    split, left_out, no_split = _splits(t["Split_Set"], test_sets, unknown_split, labels_path)
    keep = split.notna() & t["EmoClass"].isin(list(mapping))
    codes = t.loc[split.notna() & ~keep, "EmoClass"].value_counts()
    excluded = {code: int(codes[code]) for code in CODES if code in codes.index} | left_out
    t, recording, segment, split = t[keep], recording[keep], segment[keep], split[keep]
    # A recording whose segments fall in several splits becomes one conversation per split.
    mixed = split.groupby(recording).nunique()
    mixed = set(mixed[mixed > 1].index)
    conversation = [f"{r}@{s}" if r in mixed else r for r, s in zip(recording, split)]
    audios = base / "Audios"
    if check_audio is None:
        check_audio = audios.is_dir()
    audio_paths = [(audios / name).resolve() for name in t["FileName"]]
    if check_audio:
        missing = [str(p) for p in audio_paths if not p.is_file()]
        if missing:
            raise DataError(f"MSP-Podcast: {len(missing)} audio files are missing under {audios}: {_listing(missing)}")
    stems = t["FileName"].map(lambda n: Path(n).stem)
    transcripts = base / "Transcripts"
    text = _transcripts(transcripts, stems, require_transcripts) if transcripts.is_dir() else [""] * len(t)
    speaker = t["SpkrID"] if "SpkrID" in t.columns else pd.Series("", index=t.index)
    table = pd.DataFrame({
        "utterance_id": stems,
        "conversation_id": conversation,
        "turn": segment,
        "split": split,
        "text": text,
        "label": t["EmoClass"].map(mapping),
        "audio_path": [str(p) for p in audio_paths],
        "speaker": speaker.where(~speaker.str.lower().isin(["unknown"] + list(_MISSING)), ""),
        "valence": _scores(t, "EmoVal", labels_path),
        "arousal": _scores(t, "EmoAct", labels_path),
    })
    source = str(labels_path)
    if no_split:
        source += f" ({no_split} rows without Split_Set placed in {unknown_split})"
        log.warning("MSP-Podcast: %d rows have no Split_Set; placed in %s", no_split, unknown_split)
    labels = tuple(dict.fromkeys(mapping.values()))
    return Manifest("msp_podcast", labels, table, source, excluded).validate(check_audio=bool(check_audio))
