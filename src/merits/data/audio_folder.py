"""Audio-folder adapter: new recordings with no annotation, as an UNLABELLED manifest (for ``merits predict`` and
``merits asr``).

``root`` is a folder::

    root/
      call-01/             a sub-folder is one conversation; its files are its utterances in natural
        turn-1.wav         file-name order (turn-2 before turn-10)
        turn-2.wav
      call-02/ ...
      hello.wav            files directly in root form one more conversation, named after root

Rows: conversation_id = the sub-folder's name (or root's), turn = the position in that order, utterance_id =
``<conversation>/<file stem>``, split = ``test``, text and label empty (``merits asr`` transcribes, ``merits predict``
does it for a text model), audio_path = the absolute path. Deeper folders are not read (say so rather than
guess a conversation structure). Files whose suffix is not audio (``notes.txt``) are counted in ``excluded``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from merits.data.manifest import Manifest, _listing
from merits.errors import DataError

CORPUS = "audio_folder"
# what merits.audio decodes: libsndfile formats, and containers FFmpeg reads through PyAV
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".wma", ".aif", ".aiff"}


def natural_key(name: str) -> list:
    """Sort key under which "turn-2" comes before "turn-10"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _conversation(folder: Path, name: str, excluded: dict[str, int]) -> list[dict]:
    files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: natural_key(p.name))
    rows = []
    for p in files:
        if p.suffix.lower() not in AUDIO_SUFFIXES:
            excluded["not audio"] = excluded.get("not audio", 0) + 1
            continue
        rows.append({"utterance_id": f"{name}/{p.stem}", "conversation_id": name, "turn": len(rows),
                     "split": "test", "text": "", "label": "", "audio_path": str(p.resolve())})
    return rows


def build(root=None, name: str = CORPUS) -> Manifest:
    """Read a folder of recordings (see the module doc) into an unlabelled manifest named ``name``."""
    if root is None:
        raise DataError("audio_folder needs root = a folder of audio files, or of one sub-folder per conversation")
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"audio folder {folder} does not exist" + (" (it is a file)" if folder.is_file() else ""))
    excluded: dict[str, int] = {}
    rows = _conversation(folder, folder.resolve().name, excluded)
    subfolders = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: natural_key(p.name))
    for sub in subfolders:
        nested = [p.name for p in sub.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if nested:
            raise DataError(f"{sub} holds folders ({_listing(nested)}): an audio folder has one level of "
                            "sub-folders, one per conversation")
        rows += _conversation(sub, sub.name, excluded)
    if not rows:
        raise DataError(f"{folder} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}), "
                        "neither directly nor in its sub-folders")
    ids = pd.Series([r["utterance_id"] for r in rows])
    clash = ids[ids.duplicated(keep=False)]
    if len(clash):  # a.wav and a.mp3 in one folder
        raise DataError(f"{folder}: two files share a name up to the suffix: {_listing(dict.fromkeys(clash))}")
    return Manifest(str(name), (), pd.DataFrame(rows), str(folder.resolve()), excluded).validate()
