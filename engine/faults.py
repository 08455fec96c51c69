"""Fault injection for tests: make the worker fail the way disks and operators make it fail, at an exact point.

``RLHF_WORKBENCH_FAULT`` names one fault and the occurrence it strikes at, e.g. ``kill-in-checkpoint:2`` (the
process SIGKILLs itself while writing its second checkpoint, after the files are written and before the folder is
renamed into place) or ``enospc-in-checkpoint:1`` (the first checkpoint write fails with "No space left on
device"). Unset, every call here is a dictionary look-up and nothing happens. Tests set it on a worker's
environment; the product never does.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

VARIABLE = "RLHF_WORKBENCH_FAULT"
_seen: Counter[str] = Counter()


def strike(point: str) -> None:
    """Called at a named point of the code; acts when the variable names this point and its count is reached."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    fault, _, at = spec.partition(":")
    kind, _, where = fault.partition("-in-")
    if where != point:
        return
    _seen[point] += 1
    if _seen[point] != int(at or 1):
        return
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
