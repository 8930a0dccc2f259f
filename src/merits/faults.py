"""Named points where a fault-injection test can kill the process, reproducibly (not by timing).

    MERITS_KILL_AT=stage1_text.trained merits train ...   # the process dies right after Stage I text saved its model

Nothing happens unless the environment variable names the point; the tests use it to check that every kill point
resumes to the same results.
"""

from __future__ import annotations

import os

KILL_POINTS = ("stage.computed", "stage1_text.trained", "stage1_text.exporting", "steps.checkpointed",
               "trainer.epoch_saved",
               "pseudolabel.worker_batch")


_REACHED: dict[str, int] = {}  # kill point -> times this process reached it


def kill_point(name: str) -> None:
    """Die here (exit status 137, like a SIGKILL) when MERITS_KILL_AT names this point; ``name@N``: the N-th time
    this process reaches it (e.g. the second epoch checkpoint, which is Stage II's in a run whose Stage I saves once)."""
    wanted = os.environ.get("MERITS_KILL_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _REACHED[name] = _REACHED.get(name, 0) + 1
    if _REACHED[name] == int(nth or 1):
        os._exit(137)


def kill_once(name: str) -> None:
    """Die here the first time any process reaches this point (MERITS_KILL_ONCE_AT names it; MERITS_KILL_ONCE_FILE
    is the marker that makes it once): a worker that Ray restarts then gets past it."""
    marker = os.environ.get("MERITS_KILL_ONCE_FILE")
    if os.environ.get("MERITS_KILL_ONCE_AT") == name and marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(137)
