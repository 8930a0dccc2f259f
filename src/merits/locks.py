"""Locks between processes: one process at a time computes a stage or labels into a store.

``held(path)`` holds ``<path>.lock`` (an OS file lock: a process that dies releases it, so no lock is ever stale)
and writes who holds it beside it (``<path>.lock.holder``: process id, host, since when), so that a second process
can say whom it waits for. ``wait=False`` refuses instead of waiting.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from merits.errors import MeritsError

log = logging.getLogger("merits")


class Busy(MeritsError):
    """Another process holds the lock and the caller asked not to wait."""


@contextmanager
def held(path: str | Path, what: str = "", wait: bool = True):
    """Hold the lock ``<path>.lock`` for the ``with`` block; ``what`` names the work in messages. The lock belongs to
    the file itself: ``path`` is resolved first, so one store named through a symlink (or ``..``) is one lock."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    path = Path(path).resolve()
    lock = FileLock(f"{path}.lock")
    holder = Path(f"{path}.lock.holder")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder.read_text().strip() if holder.is_file() else "another process"
        if not wait:
            raise Busy(f"{what or path} is in use by {who}; wait for it to finish or stop it") from None
        log.warning("%s is being worked on by %s: waiting for it", what or path, who)
        lock.acquire()
    try:
        holder.write_text(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        yield
    finally:
        lock.release()


def sqlite_wal(path: str | Path, timeout: float = 30.0, **options):
    """A SQLite connection to ``path`` in WAL mode, for a file that other connections (threads, processes) open at
    the same moment. Switching a new file to WAL takes a lock that SQLite does not wait for (SQLITE_BUSY comes back
    at once, whatever ``timeout``): that one step is retried until ``timeout``. Other errors go to the caller."""
    import sqlite3

    # the resolved file: SQLite names its -wal and -shm files after the path it is given, so one database opened
    # through a symlink and directly would otherwise have two write-ahead logs
    db = sqlite3.connect(Path(path).resolve(), timeout=timeout, **options)
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.05)
