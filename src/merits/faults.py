"""Named points where a fault-injection test can kill the process, reproducibly (not by timing).

    MERITS_KILL_AT=stage1_text.trained merits train ...   # the process dies right after Stage I text saved its model

Nothing happens unless the environment variable names the point; the tests use it to check that every kill point
resumes to the same results.
"""

from __future__ import annotations

import os

KILL_POINTS = ("stage.computed", "stage1_text.trained", "stage1_text.exporting", "steps.checkpointed")


def kill_point(name: str) -> None:
    """Die here (exit status 137, like a SIGKILL) when MERITS_KILL_AT names this point."""
    if os.environ.get("MERITS_KILL_AT") == name:
        os._exit(137)
