"""Who is using a project file right now: a window (its lock file ``NAME.lock``) or a training run (a run row whose
worker process is alive). Restoring a backup over a project in use would leave that window or worker writing into
the replaced file, so restore asks here first.

The window's lock is a Qt ``QLockFile``; its first lines are the owner's pid, the application name and the host
name, which is all this Qt-free reader needs (a lock whose process is gone is stale and does not count).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

from .errors import WorkbenchError
from .jobs.client import pid_alive


def window_lock_path(project_path: str | os.PathLike[str]) -> Path:
    p = Path(project_path)
    return p.with_name(p.name + ".lock")


def window_owner(project_path: str | os.PathLike[str]) -> int | None:
    """The pid of the live window on this host that holds the project's lock, or None."""
    try:
        lines = window_lock_path(project_path).read_text(encoding="utf-8", errors="replace").splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    host = lines[2] if len(lines) > 2 else ""
    if host and host != socket.gethostname():
        return pid  # another machine's window (a shared folder): assume it is alive
    return pid if pid_alive(pid) else None


def live_runs(project_path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """(run id, pid) of runs recorded as running whose worker process is alive."""
    from .store import Project

    try:
        with Project.open(project_path, migrate=False) as project:
            rows = project.running_runs()
    except (WorkbenchError, sqlite3.DatabaseError):  # a damaged or foreign file has no runs to wait for
        return []
    return [(rid, pid) for rid, pid in rows if pid and pid_alive(pid)]


def project_in_use(project_path: str | os.PathLike[str]) -> str | None:
    """Why the project is in use (one phrase), or None when nothing holds it."""
    if not Path(project_path).exists():
        return None
    pid = window_owner(project_path)
    if pid is not None:
        return f"it is open in an RLHF Workbench window (process {pid})"
    runs = live_runs(project_path)
    if runs:
        return f"run {runs[0][0]} is still training on it (process {runs[0][1]}); cancel it or let it finish"
    return None
