"""IEMOCAP adapter: the official release layout (``IEMOCAP_full_release/Session1..5``).

Per session it reads

- ``Session{n}/dialog/EmoEvaluation/<dialog>.txt``: one line ``[start - end]\\t<utterance>\\t<code>\\t[V, A, D]`` per
  utterance (the consensus label); header lines and per-annotator lines (``C-E1:``, ``A-E1:`` ...) are ignored;
- ``Session{n}/dialog/transcriptions/<dialog>.txt``: ``<utterance> [start-end]: text``; lines that are not
  utterances (``M: breathing``, ids such as ``Ses01F_impro01_MXX0``) are ignored;
- ``Session{n}/sentences/wav/<dialog>/<utterance>.wav``: the audio of each utterance.

The usual four-class setup (5531 utterances): anger, happiness (hap + exc merged), sadness, neutral. Every other
code is dropped on purpose and counted in ``Manifest.excluded``. Session 5 is the test set, one configurable session
is the validation set, the rest train. A conversation is a dialog; its turns are ranked by start time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest, _listing
from merits.errors import DataError

LABELS = ("anger", "happiness", "sadness", "neutral")
LABEL_MAP = {"ang": "anger", "hap": "happiness", "exc": "happiness", "sad": "sadness", "neu": "neutral"}
# Codes the release uses that the four-class setup drops on purpose (counted, never silently lost).
DROPPED_CODES = ("fru", "sur", "fea", "dis", "oth", "xxx")
SESSIONS = (1, 2, 3, 4, 5)
TEST_SESSION = 5
EXPECTED_UTTERANCES = 5531  # four classes over all five sessions, as in the literature and SpeechBrain's recipe

# "[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]"  (V, A, D on a 1-5 scale)
_EVAL_LINE = re.compile(
    r"^\[(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\]\s+(?P<utt>Ses\d\d[FM]_\S+)\s+(?P<code>\w+)"
    r"\s+\[(?P<val>[\d.]+),\s*(?P<act>[\d.]+),\s*(?P<dom>[\d.]+)\]"
)
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."  (the id ends in F/M + three digits)
_TRANSCRIPT_LINE = re.compile(r"^(?P<utt>Ses\d\d[FM]_\S+_[FM]\d{3})\s+\[[^\]]*\]:\s?(?P<text>.*)$")


def _release_root(root) -> Path:
    """Accept the folder holding ``Session1..5`` or its parent holding ``IEMOCAP_full_release``."""
    if root is None:
        raise DataError("IEMOCAP needs the path of the official release (the folder holding Session1..Session5)")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"IEMOCAP root {root} does not exist")
    if not any((root / f"Session{n}").is_dir() for n in SESSIONS) and (root / "IEMOCAP_full_release").is_dir():
        root = root / "IEMOCAP_full_release"
    return root


def _sessions(root: Path) -> list[int]:
    """The sessions present; fail clearly when none is, or when one lacks its EmoEvaluation folder."""
    present = [n for n in SESSIONS if (root / f"Session{n}").is_dir()]
    if not present:
        raise DataError(
            f"IEMOCAP root {root} holds no Session1..Session5 folder; expected the official layout "
            "Session{n}/dialog/EmoEvaluation/*.txt, Session{n}/dialog/transcriptions/*.txt, Session{n}/sentences/wav/"
        )
    lacking = [f"Session{n}/dialog/EmoEvaluation" for n in present if not (root / f"Session{n}/dialog/EmoEvaluation").is_dir()]
    if lacking:
        raise DataError(f"IEMOCAP root {root} lacks {_listing(lacking)}")
    return present


def _text_files(folder: Path) -> list[Path]:
    """Top-level ``*.txt`` of a folder, skipping hidden files such as macOS ``._`` resource forks."""
    return sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))


def read_evaluations(session_dir: Path) -> pd.DataFrame:
    """All consensus lines of one session: utterance id, dialog, start, end, code, valence, arousal."""
    rows = []
    for path in _text_files(session_dir / "dialog" / "EmoEvaluation"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _EVAL_LINE.match(line.strip())
            if m:
                rows.append({
                    "utterance_id": m["utt"], "dialog": path.stem, "start": float(m["start"]), "end": float(m["end"]),
                    "code": m["code"].lower(), "valence": float(m["val"]), "arousal": float(m["act"]),
                })
    return pd.DataFrame(rows, columns=["utterance_id", "dialog", "start", "end", "code", "valence", "arousal"])


def read_transcriptions(session_dir: Path) -> dict[str, str]:
    """Utterance id -> transcript for one session (an absent folder gives no transcripts)."""
    texts: dict[str, str] = {}
    folder = session_dir / "dialog" / "transcriptions"
    if not folder.is_dir():
        return texts
    for path in _text_files(folder):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _TRANSCRIPT_LINE.match(line.strip())
            if m:
                texts[m["utt"]] = m["text"].strip()
    return texts


def _split_of(session: int, validation_session: int) -> str:
    if session == TEST_SESSION:
        return "test"
    return "validation" if session == validation_session else "train"


def _check_validation_session(value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number not in (1, 2, 3, 4) or str(value).strip() != str(number):
        raise DataError(f"IEMOCAP validation_session must be one of 1, 2, 3, 4 (session 5 is the test set); got {value!r}")
    return number


def _session_table(root: Path, session: int, validation_session: int, require_text: bool) -> tuple[pd.DataFrame, pd.Series]:
    """The kept utterances of one session as manifest rows, and the codes the label map dropped."""
    session_dir = root / f"Session{session}"
    ev = read_evaluations(session_dir)
    unknown = ev[~ev["code"].isin(list(LABEL_MAP) + list(DROPPED_CODES))]
    if len(unknown):
        pairs = [f"{u} ({c!r})" for u, c in zip(unknown["utterance_id"], unknown["code"])]
        raise DataError(f"{session_dir}/dialog/EmoEvaluation: unknown emotion codes: {_listing(pairs)}")
    dropped = ev.loc[~ev["code"].isin(list(LABEL_MAP)), "code"]
    ev = ev[ev["code"].isin(list(LABEL_MAP))].copy()
    texts = read_transcriptions(session_dir)
    untranscribed = [u for u in ev["utterance_id"] if u not in texts]
    if untranscribed and require_text:
        raise DataError(
            f"{session_dir}/dialog/transcriptions: no transcript line for {len(untranscribed)} utterances: "
            f"{_listing(untranscribed)} (pass require_text=false to keep them with empty text)"
        )
    wavs = [session_dir / "sentences" / "wav" / d / f"{u}.wav" for d, u in zip(ev["dialog"], ev["utterance_id"])]
    missing = [str(p) for p in wavs if not p.is_file()]
    if missing:
        raise DataError(f"IEMOCAP Session{session}: {len(missing)} utterance wav files are missing: {_listing(missing)}")
    # Turn = rank by start time inside the dialog (the files are not guaranteed to be in time order).
    ev = ev.assign(audio_path=[str(p.resolve()) for p in wavs]).sort_values(["dialog", "start", "utterance_id"], kind="stable")
    table = pd.DataFrame({
        "utterance_id": ev["utterance_id"],
        "conversation_id": ev["dialog"],
        "turn": ev.groupby("dialog").cumcount(),
        "split": _split_of(session, validation_session),
        "text": [texts.get(u, "") for u in ev["utterance_id"]],
        "label": ev["code"].map(LABEL_MAP),
        "audio_path": ev["audio_path"],
        # Gender letter of the utterance's own part (not the dialog's), prefixed with the session: reference only.
        "speaker": [f"Ses{session:02d}_{u.rsplit('_', 1)[1][0]}" for u in ev["utterance_id"]],
        "valence": ev["valence"],
        "arousal": ev["arousal"],
    })
    return table, dropped


def build(root=None, validation_session: int = 4, strict_counts: bool = True, require_text: bool = True) -> Manifest:
    """Read the official IEMOCAP release at ``root`` into a four-class manifest.

    validation_session: which of sessions 1-4 is the validation set (session 5 is always the test set).
    strict_counts: with all five sessions present the release gives 5531 utterances; any other count is an
    error (set False for a subset or a synthetic copy). require_text: fail when a kept utterance has no
    transcript line (False keeps it with empty text; its audio still makes the row valid).
    """
    validation_session = _check_validation_session(validation_session)
    root = _release_root(root)
    sessions = _sessions(root)
    parts, dropped = [], []
    for session in sessions:
        table, codes = _session_table(root, session, validation_session, require_text)
        parts.append(table)
        dropped.append(codes)
    table = pd.concat(parts, ignore_index=True)
    if table.empty:
        raise DataError(f"IEMOCAP root {root}: no EmoEvaluation line with a kept label ({sorted(LABEL_MAP)}) was found")
    if strict_counts and sessions == list(SESSIONS) and len(table) != EXPECTED_UTTERANCES:
        raise DataError(
            f"IEMOCAP root {root}: {len(table)} four-class utterances, the official release has {EXPECTED_UTTERANCES} "
            "(pass strict_counts=false for a modified copy)"
        )
    counts = pd.concat(dropped).value_counts()
    excluded = {code: int(counts[code]) for code in DROPPED_CODES if code in counts.index}
    return Manifest("iemocap", LABELS, table, str(root), excluded).validate()
