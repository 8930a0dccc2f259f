"""MELD adapter: the official ``{train,dev,test}_sent_emo.csv`` (+ optional ``MELD.Raw`` video clips).

Both the current clean CSVs and the ones inside the original ``MELD.Raw.tar.gz`` (whose text holds C1 control
characters where Windows-1252 punctuation was meant) give the same clean text. Utterances are ordered by
``Utterance_ID``, which has gaps. Without ``root`` the embedded copy of the text CSVs is used.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest, _listing
from merits.errors import DataError

LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
FILES = {"train": "train_sent_emo.csv", "validation": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
EXPECTED_UTTERANCES = {"train": 9989, "validation": 1109, "test": 2610}
# Folders of MELD.Raw that hold the clips dia{D}_utt{U}.mp4, per split (either directly under root or nested).
VIDEO_DIRS = {
    "train": ("train_splits", "train/train_splits"),
    "validation": ("dev_splits_complete", "dev/dev_splits_complete"),
    "test": ("output_repeated_splits_test", "test/output_repeated_splits_test"),
}
EMBEDDED_ROOT = Path(__file__).parent / "embedded" / "meld"
COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")


def repair_text(text: str) -> str:
    """Undo the raw release's encoding: C1 controls are cp1252 punctuation read as latin-1; NBSP is a space."""
    out = []
    for ch in text:
        if "\x80" <= ch <= "\x9f":
            try:
                ch = ch.encode("latin-1").decode("cp1252")
            except UnicodeDecodeError:  # the five C1 bytes cp1252 leaves undefined carry no text
                ch = ""
        elif ch == "\xa0":
            ch = " "
        out.append(ch)
    return " ".join("".join(out).split())


def _read_csv(path: Path) -> pd.DataFrame:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # a copy saved as Windows-1252 bytes rather than UTF-8
        text = raw.decode("cp1252", errors="replace")
    from io import StringIO

    table = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: not a MELD CSV, missing columns {missing}")
    return table


def _video_dir(root: Path, split: str) -> Path | None:
    for rel in VIDEO_DIRS[split]:
        for base in (root, root / "MELD.Raw"):
            if (base / rel).is_dir():
                return base / rel
    return None


def build(root=None, strict_counts: bool = True, require_audio: bool = False) -> Manifest:
    """Read the three CSVs under ``root`` (default: the embedded copy) into a manifest.

    strict_counts: the official release has 9989 / 1109 / 2610 utterances; any other count is an error
    (set False for a subset). require_audio: fail unless the MELD.Raw video clips are found.
    """
    root = Path(root) if root else EMBEDDED_ROOT
    if root.is_file():
        raise DataError(f"MELD root {root} is a file; MELD wants the folder of its release (train_sent_emo.csv, ...). "
                        "For a CSV / JSONL of your own conversations use the custom adapter (data.corpus=custom)")
    if not root.is_dir():
        raise DataError(f"MELD root {root} does not exist")
    absent = [name for name in FILES.values() if not (root / name).is_file()]
    if absent:
        raise DataError(f"MELD root {root} lacks {absent}; expected the official {list(FILES.values())}")
    parts = []
    for split, name in FILES.items():
        t = _read_csv(root / name)
        for col in ("Utterance", "Speaker"):
            t[col] = t[col].map(repair_text)
        for col in ("Dialogue_ID", "Utterance_ID"):
            ids = pd.to_numeric(t[col], errors="coerce")
            if ids.isna().any():
                rows = (ids[ids.isna()].index + 2).tolist()  # +2: header line and 1-based numbering
                raise DataError(f"{root / name}: non-integer {col} on lines {_listing(rows)}")
            t[col] = ids.astype(int)
        prefix = name.split("_")[0]  # train / dev / test as in the release
        manifest_part = pd.DataFrame({
            "utterance_id": [f"{prefix}/dia{d}_utt{u}" for d, u in zip(t["Dialogue_ID"], t["Utterance_ID"])],
            "conversation_id": [f"{prefix}/dia{d}" for d in t["Dialogue_ID"]],
            "turn": t["Utterance_ID"],
            "split": split,
            "text": t["Utterance"],
            "label": t["Emotion"].str.strip().str.lower(),
            "speaker": t["Speaker"],
            "sentiment": t["Sentiment"].str.strip().str.lower(),
        })
        videos = _video_dir(root, split)
        if videos is not None:
            manifest_part["audio_path"] = [str(videos / f"dia{d}_utt{u}.mp4") for d, u in zip(t["Dialogue_ID"], t["Utterance_ID"])]
        elif require_audio:
            raise DataError(f"MELD root {root}: no video folder for {split} (looked for {VIDEO_DIRS[split]})")
        # Sort by the numeric dialogue id then utterance id (the CSV order is not guaranteed; ids have gaps).
        order = sorted(range(len(t)), key=lambda i: (t["Dialogue_ID"].iat[i], t["Utterance_ID"].iat[i]))
        parts.append(manifest_part.iloc[order])
    manifest = Manifest("meld", LABELS, pd.concat(parts, ignore_index=True), str(root))
    manifest.validate(check_audio=bool(manifest.table["audio_path"].ne("").any()))
    # Counts are checked after the rows themselves, so that a broken row is named rather than a wrong total.
    for split, name in FILES.items():
        n = int((manifest.table["split"] == split).sum())
        if strict_counts and n != EXPECTED_UTTERANCES[split]:
            raise DataError(f"{root / name}: {n} utterances, the official release has {EXPECTED_UTTERANCES[split]} "
                            "(pass strict_counts=false for a subset)")
    return manifest
