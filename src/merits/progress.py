"""Progress bars for long work: a tqdm bar on a terminal; plain lines (no carriage returns) at most every
``FILE_INTERVAL`` seconds when stderr goes to a file or a pipe; nothing under ``MERITS_QUIET`` or off rank 0."""

from __future__ import annotations

import os
import sys
import threading

from tqdm.auto import tqdm

FILE_INTERVAL = 30.0  # seconds between two progress lines in a log file
_THREAD = threading.local()  # .quiet: no bars from this thread (merits serve's model thread: one per request)


def quiet_thread() -> None:
    """No progress bars from the calling thread from now on (a service predicting many small requests)."""
    _THREAD.quiet = True


class _Lines:
    """A stream for tqdm that writes each refresh as one line: a log file reads as a record, not a smear of \\r."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.strip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, **kwargs):
    """tqdm over ``iterable`` (or ``total=``), quiet when MERITS_QUIET is set (tests, benchmarks) and off rank 0."""
    from merits.distributed import Distributed

    quiet = (bool(os.environ.get("MERITS_QUIET")) or getattr(_THREAD, "quiet", False)
             or not Distributed.current().is_main)
    if quiet or sys.stderr.isatty():
        return tqdm(iterable, disable=quiet, dynamic_ncols=True, leave=False, **kwargs)
    return tqdm(iterable, file=_Lines(sys.stderr), mininterval=FILE_INTERVAL, maxinterval=FILE_INTERVAL * 4,
                ncols=100, ascii=True, leave=True, **kwargs)
