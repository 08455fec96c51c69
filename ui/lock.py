"""The window lock: one window per project file, so two windows never annotate the same queue at once.

A ``QLockFile`` beside the project (``NAME.lock``) holds the pid and host; a lock left by a killed window is
stale (its process is gone) and is taken over. Only windows take this lock: the engine keeps writing runs and
metrics to the same SQLite file, which WAL makes safe.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QLockFile

from workbench.errors import ProjectLockedError


def lock_path(project_path: Path) -> Path:
    return project_path.with_name(project_path.name + ".lock")


class WindowLock:
    """Held while a window has the project open; :meth:`release` (or garbage collection) frees it."""

    def __init__(self, project_path: Path):
        self.path = lock_path(Path(project_path))
        self._lock = QLockFile(str(self.path))
        # Never time out a live lock: a window may stay open for days; dead owners are detected by pid.
        self._lock.setStaleLockTime(0)
        if not self._lock.tryLock(0):
            info = self._lock.getLockInfo()  # PySide6: (pid, host, app), or a falsy value when unreadable
            who = f"process {info[0]} on {info[1]}" if info and len(info) >= 2 else "another window"
            raise ProjectLockedError(
                f"{project_path}: already open in another RLHF Workbench window ({who}); "
                "switch to that window, or close it and open the project again"
            )

    def release(self) -> None:
        if self._lock.isLocked():
            self._lock.unlock()
