"""Live conversations of ``merits serve``: each turn as it was added, with the emotion predicted at that moment.

A SQLite file (WAL), so a restarted server keeps its conversations and several server processes may share one
file: a turn's number is taken when it is stored, and a turn that another process stored first is reported as a
conflict (the client retries), never silently overwritten.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from merits.locks import sqlite_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    conversation TEXT NOT NULL,
    turn         INTEGER NOT NULL,
    text         TEXT NOT NULL,
    audio        TEXT NOT NULL,       -- the kept audio of the turn ('' when none was sent or none is kept)
    result       TEXT NOT NULL,       -- JSON: the turn's prediction when it was added (label, confidence, ...)
    created      REAL NOT NULL,
    speaker      TEXT NOT NULL DEFAULT '',  -- who spoke, where the client said
    PRIMARY KEY (conversation, turn)
)
"""


class TurnConflict(Exception):
    """Another writer stored this turn of the conversation first."""


class LiveStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the server's threads one at a time
        self._db = sqlite_wal(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA secure_delete=ON")  # a forgotten conversation's text is overwritten, not left in pages
        self._db.execute(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(turns)")}
        if "speaker" not in columns:  # a store written before turns had speakers
            self._db.execute("ALTER TABLE turns ADD COLUMN speaker TEXT NOT NULL DEFAULT ''")

    def turns(self, conversation: str) -> list[dict]:
        """The stored turns of a conversation in order ([] when unknown)."""
        with self._lock:
            rows = self._db.execute("SELECT turn, text, audio, result, created, speaker FROM turns WHERE "
                                    "conversation = ? ORDER BY turn", (conversation,)).fetchall()
        return [{"turn": t, "text": text, "audio": audio, "result": json.loads(result), "created": created,
                 "speaker": speaker} for t, text, audio, result, created, speaker in rows]

    def add(self, conversation: str, turn: int, text: str, audio: str, result: dict, speaker: str = "") -> None:
        """Store turn ``turn``; TurnConflict when it exists already (another server added it meanwhile)."""
        try:
            with self._lock:
                self._db.execute("INSERT INTO turns (conversation, turn, text, audio, result, created, speaker) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (conversation, turn, text, audio, json.dumps(result), time.time(), speaker))
        except sqlite3.IntegrityError:
            raise TurnConflict(f"turn {turn} of conversation {conversation!r} was added meanwhile by another "
                               f"request; send the turn again") from None

    def delete(self, conversation: str) -> list[str]:
        """Forget a conversation; returns the audio files its turns kept (for the caller to remove)."""
        with self._lock:
            audio = [a for (a,) in self._db.execute("SELECT audio FROM turns WHERE conversation = ? AND audio != ''",
                                                    (conversation,))]
            self._db.execute("DELETE FROM turns WHERE conversation = ?", (conversation,))
            # the deleted rows also live in the write-ahead log until a checkpoint: write them back and empty it
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return audio

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(DISTINCT conversation) FROM turns").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
