"""Backups of a project file: consistent copies beside the project, rotated, and restoring one in place.

- Where: ``NAME.backups/`` beside ``NAME`` (like the runs folder ``NAME.runs/``), one file per backup named
  ``NAME-YYYYMMDD-HHMMSS-<reason>.wbp`` (reasons: ``auto``, the window's timer; ``before-import``;
  ``before-migration-v<N>``; ``manual``). Each is a whole project file that opens on its own.
- How: SQLite's online backup API through the store (:meth:`Project.copy_to`), which is safe while a training
  worker writes to the project, written to a temporary name and renamed, so a backup is complete or absent.
- Rotation: after each new backup the newest :data:`DEFAULT_KEEP` (the project's ``backups.keep`` setting) are kept.
- Restore (:func:`restore`): the backup is checked (a project, readable, not from a newer app), copied beside the
  project, then the current file (with its WAL side files) is renamed to ``NAME.replaced-<time>`` (never
  overwritten) and the copy renamed into place. Refused while a window or a training run has the project open.

Qt-free: the CLI (``workbench backup``/``restore``) and the window's Project menu run the same functions.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .errors import NewerSchemaError, NotAProjectError, WorkbenchError
from .paths import backups_dir
from .schema import SCHEMA_VERSION
from .store import Project, is_project_file
from .store.health import examine_file

DEFAULT_KEEP = 10
KEEP_SETTING = "backups.keep"
SUFFIX = ".wbp"
_NAME = re.compile(r"^(?P<stem>.+)-(?P<stamp>\d{8}-\d{6})(?:-(?P<n>\d+))?-(?P<reason>[a-z0-9-]+)\.wbp$")


@dataclass(frozen=True)
class Backup:
    path: Path
    taken_at: datetime
    reason: str
    size: int

    def describe(self) -> str:
        return f"{self.path.name} ({self.reason}, {self.taken_at:%Y-%m-%d %H:%M:%S}, {self.size / 2**20:.1f} MB)"


def list_backups(project_path: str | os.PathLike[str]) -> list[Backup]:
    """The project's backups, newest first."""
    folder = backups_dir(project_path)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            taken = datetime.strptime(m["stamp"], "%Y%m%d-%H%M%S")
            found.append((taken, int(m["n"] or 0), Backup(p, taken, m["reason"], p.stat().st_size)))
    return [b for _, _, b in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]


def newest_backup(project_path: str | os.PathLike[str]) -> Backup | None:
    backups = list_backups(project_path)
    return backups[0] if backups else None


def new_backup_path(project_path: str | os.PathLike[str], reason: str) -> Path:
    """A fresh name in the backups folder (the folder is created)."""
    p = Path(project_path)
    folder = backups_dir(p)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = p.name[: -len(SUFFIX)] if p.name.endswith(SUFFIX) else p.name
    # Several backups within one second are numbered after the highest number taken (not the first free one: a
    # pruned low number reused would sort the new backup as the oldest).
    taken = [int(m["n"] or 0) for m in (_NAME.match(f.name) for f in folder.iterdir()) if m and m["stamp"] == stamp]
    if not taken:
        return folder / f"{stem}-{stamp}-{reason}{SUFFIX}"
    return folder / f"{stem}-{stamp}-{max(taken) + 1}-{reason}{SUFFIX}"


def write_copy(project: Project, target: str | os.PathLike[str]) -> Path:
    """A consistent copy of ``project`` at ``target`` (a new file): written under a temporary name, then renamed,
    so ``target`` is whole or absent."""
    target = Path(target)
    if target.exists():
        raise WorkbenchError(f"{target}: a file already exists there; pick another name")
    if not target.parent.is_dir():
        raise WorkbenchError(f"{target.parent}: no such folder")
    tmp = target.with_name(f".{target.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        project.copy_to(tmp)  # flushed to disk before the rename
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def keep_count(project: Project) -> int:
    try:
        return max(1, int(project.meta(KEEP_SETTING) or DEFAULT_KEEP))
    except ValueError:
        return DEFAULT_KEEP


def back_up(project: Project, reason: str = "auto") -> Backup:
    """A new backup of ``project`` in its backups folder, then the oldest beyond the project's keep count removed."""
    path = write_copy(project, new_backup_path(project.path, reason))
    prune(project.path, keep_count(project))
    return next(b for b in list_backups(project.path) if b.path == path)


def back_up_file(project_path: str | os.PathLike[str], reason: str = "auto") -> Backup:
    """:func:`back_up` on a connection of its own: what a background thread calls while the window keeps its
    connection (a backup reads for a while, and SQLite serialises the calls on one connection)."""
    with Project.open(project_path, migrate=False, read_only=None) as project:
        return back_up(project, reason)


def prune(project_path: str | os.PathLike[str], keep: int) -> list[Path]:
    removed = []
    for b in list_backups(project_path)[keep:]:
        b.path.unlink(missing_ok=True)
        removed.append(b.path)
    return removed


# ---------------------------------------------------------------------------------------------- restore
def check_backup(path: str | os.PathLike[str]) -> None:
    """Refuse a backup that is missing, not a project, damaged, or written by a newer app (one clear message)."""
    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"{p}: no such backup file")
    if p.is_dir():
        raise WorkbenchError(f"{p}: is a folder, not a backup file")
    if not is_project_file(p):
        raise NotAProjectError(f"{p}: not an RLHF Workbench project file, so not a backup of one")
    try:
        version, problems = examine_file(p)
    except sqlite3.DatabaseError as e:
        raise WorkbenchError(f"{p}: the backup is damaged ({e}); pick another one") from e
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(f"{p}: written by a newer RLHF Workbench (schema {version}, this app reads up to "
                               f"{SCHEMA_VERSION}); update the app to restore it")
    if problems:
        raise WorkbenchError(f"{p}: the backup is damaged ({problems[0]}); pick another one")


def replaced_name(project_path: Path) -> Path:
    """``NAME.replaced-<time>``, with a counter when that name is taken (a replaced file is never overwritten)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = project_path.with_name(f"{project_path.name}.replaced-{stamp}")
    n = 2
    while any(Path(str(target) + s).exists() for s in ("", "-wal", "-shm")):
        target = project_path.with_name(f"{project_path.name}.replaced-{stamp}-{n}")
        n += 1
    return target


def restore(backup: str | os.PathLike[str], project_path: str | os.PathLike[str]) -> Path | None:
    """Put ``backup`` in place as ``project_path``; returns where the replaced file went (None when there was no
    file). Nothing changes when the backup is refused or the project is in use."""
    from .project_use import project_in_use

    src, dst = Path(backup), Path(project_path)
    check_backup(src)
    if dst.is_dir():
        raise WorkbenchError(f"{dst}: is a folder, not a project file")
    if src.resolve() == dst.resolve():
        raise WorkbenchError(f"{src}: the backup and the project are the same file")
    busy = project_in_use(dst)
    if busy:
        raise WorkbenchError(f"{dst}: {busy}; close it first, then restore")
    if not dst.parent.is_dir():
        raise WorkbenchError(f"{dst.parent}: no such folder")
    tmp = dst.with_name(f".{dst.name}.restoring")
    tmp.unlink(missing_ok=True)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replaced = None
    if dst.exists():
        replaced = replaced_name(dst)
        for suffix in ("-wal", "-shm", ""):  # the main file last: until then the project stays whole where it was
            side = Path(str(dst) + suffix)
            if side.exists():
                os.replace(side, Path(str(replaced) + suffix))
    else:
        for suffix in ("-wal", "-shm"):  # stale side files of a deleted project would be read into the backup
            Path(str(dst) + suffix).unlink(missing_ok=True)
    os.replace(tmp, dst)
    return replaced


def backup_age_s(b: Backup) -> float:
    return time.time() - b.taken_at.timestamp()
