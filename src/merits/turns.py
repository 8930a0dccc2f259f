"""Conversations given turn by turn, as the Python API (:func:`merits.load`) and ``merits serve`` take them, made
into the one manifest format that prediction reads."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from merits.data.manifest import Manifest


@dataclass
class Turn:
    text: str = ""
    audio: str = ""    # a decodable file on disk, or ""
    label: str = ""    # a gold label, where the caller knows it (then scored)
    speaker: str = ""  # who speaks, where known (a run trained with speaker names reads it)


@dataclass
class Conversation:
    id: str
    turns: list[Turn]


def manifest_of(conversations: list[Conversation], labels: tuple[str, ...], source: str,
                first_turn: int = 0, name: str = "input") -> Manifest:
    """One manifest row per turn: utterance ids ``<conversation id>|<turn>``, turns numbered from ``first_turn``
    (a live conversation's window starts later), every row in the test split."""
    rows = [{"utterance_id": f"{c.id}|{first_turn + k}", "conversation_id": c.id, "turn": first_turn + k,
             "split": "test", "text": t.text, "label": t.label, "audio_path": t.audio, "speaker": t.speaker}
            for c in conversations for k, t in enumerate(c.turns)]
    return Manifest(name, labels, pd.DataFrame(rows), source=source).validate()
