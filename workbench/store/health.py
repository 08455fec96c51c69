"""The project file's health, as the store sees it: SQLite's own checks, the trigger-kept counters against real
counts, snapshot hashes against the rows they froze, and consistent copies made with SQLite's online backup API.

Built on the snapshots area for their digest. The workflows
built on it (``workbench check``, backups and restore) live in :mod:`workbench.project_check` and
:mod:`workbench.backups`.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schema import COUNTER_KEYS
from .snapshots import SnapshotStore

COPY_MMAP_BYTES = 2**40  # a backup reads the whole file: map all of it (SQLite caps this at its own maximum)
COPY_PAGES_PER_STEP = 4096  # a backup writes 16 MB (of 4 KB pages) between flushes

# Each counter and the query that gives its true value (what the triggers in schema.py keep up to date).
_COUNTER_TRUTH = {
    "prompts": "SELECT COUNT(*) FROM prompt",
    "heldout_prompts": "SELECT COUNT(*) FROM prompt WHERE split = 'heldout'",
    "responses": "SELECT COUNT(*) FROM response",
    "comparisons": "SELECT COUNT(*) FROM comparison",
    "retracted": "SELECT COUNT(*) FROM comparison WHERE retracted_at IS NOT NULL",
    "retests": "SELECT COUNT(*) FROM comparison WHERE retest_of IS NOT NULL",
    "rankings": "SELECT COUNT(*) FROM ranking WHERE retracted_at IS NULL",
    "demonstrations": "SELECT COUNT(*) FROM demonstration WHERE retracted_at IS NULL",
    "flags": "SELECT COUNT(*) FROM safety_flag WHERE present = 1 AND retracted_at IS NULL",
    "safety_labels": "SELECT COUNT(*) FROM safety_flag",
    **{f"verdict:{v}": f"SELECT COUNT(*) FROM comparison WHERE verdict = '{v}' AND retracted_at IS NULL"
       for v in ("a", "b", "tie", "both_bad")},
    "verdict:pending": "SELECT COUNT(*) FROM comparison WHERE verdict IS NULL AND retracted_at IS NULL",
    **{f"strength:{s}": f"SELECT COUNT(*) FROM comparison WHERE strength = '{s}' AND retracted_at IS NULL"
       for s in ("slight", "clear", "strong")},
}
_FLAG_TRUTH = ("SELECT category, SUM(present = 1 AND retracted_at IS NULL) FROM safety_flag GROUP BY category")

# The runs whose note says their folder was found missing (``mark_run_missing``).
MISSING_NOTE = "missing: "


@dataclass(frozen=True)
class CounterMismatch:
    key: str
    stored: int | None  # None: the counter row itself is missing
    actual: int


@dataclass(frozen=True)
class SnapshotMismatch:
    snapshot_id: int
    kind: str
    stored: str
    actual: str


class HealthStore(SnapshotStore):

    # ------------------------------------------------------------------ SQLite's own checks
    def integrity_problems(self, *, limit: int = 100) -> list[str]:
        """What ``PRAGMA integrity_check`` reports; empty when the file is sound. (Not ``quick_check``: SQLite 3.40
        reports false NULLs in the keys of WITHOUT ROWID tables there.)"""
        rows = [r[0] for r in self.conn.execute(f"PRAGMA integrity_check({int(limit)})")]
        if rows == ["ok"]:
            return []
        # A row may hold several findings, one per line, under a "*** in database main ***" heading.
        return [line for row in rows for line in str(row).splitlines() if line.strip() and not line.startswith("***")]

    def foreign_key_problems(self, limit: int = 100) -> list[str]:
        """Rows pointing at a parent row that does not exist (``PRAGMA foreign_key_check``), one line each."""
        out = []
        for table, rowid, parent, _ in self.conn.execute("PRAGMA foreign_key_check"):
            out.append(f"{table} row {rowid} refers to a missing {parent} row")
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------------ counters
    def counter_mismatches(self) -> list[CounterMismatch]:
        """Counters whose stored value differs from the rows they count (or that are missing)."""
        stored = dict(self.conn.execute("SELECT key, n FROM counter"))
        out = []
        for key in COUNTER_KEYS:
            actual = int(self.conn.execute(_COUNTER_TRUTH[key]).fetchone()[0])
            if stored.get(key) != actual:
                out.append(CounterMismatch(key, stored.get(key), actual))
        flags = {f"flag:{c}": int(n or 0) for c, n in self.conn.execute(_FLAG_TRUTH)}
        for key in sorted(set(flags) | {k for k in stored if k.startswith("flag:")}):
            actual = flags.get(key, 0)
            if stored.get(key, 0 if key not in flags else None) != actual:
                out.append(CounterMismatch(key, stored.get(key), actual))
        return out

    def rebuild_counters(self) -> int:
        """Recount every counter from the rows, in one transaction; returns how many changed."""
        wrong = self.counter_mismatches()
        with self.transaction():
            for m in wrong:
                self.conn.execute("INSERT INTO counter (key, n) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET n = ?",
                                  (m.key, m.actual, m.actual))
        return len(wrong)

    # ------------------------------------------------------------------ snapshots
    def snapshot_mismatches(self) -> list[SnapshotMismatch]:
        """Snapshots whose content hash no longer matches the rows they froze (a row changed or is gone)."""
        out = []
        for sid, kind, stored in self.conn.execute("SELECT id, kind, content_hash FROM snapshot ORDER BY id").fetchall():
            actual = self._snapshot_digest(sid, kind)
            if actual != stored:
                out.append(SnapshotMismatch(sid, kind, stored, actual))
        return out

    # ------------------------------------------------------------------ runs
    def mark_run_missing(self, run_id: int, what: str) -> None:
        """Record that a run's folder (or adapter) is gone: the note starts with ``missing:``; a run that was
        still pending or running is failed."""
        with self.transaction():
            self.conn.execute(
                "UPDATE run SET error = ?, status = CASE WHEN status IN ('pending', 'running') THEN 'failed' "
                "ELSE status END WHERE id = ?", (MISSING_NOTE + what, run_id))

    def change_mark(self) -> tuple[int, int]:
        """Changes at a glance: SQLite's data version (moves when another connection, such as a training worker,
        commits) and this connection's total changes. Equal marks: nothing was written in between."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0]), int(self.conn.total_changes)

    # ------------------------------------------------------------------ copies
    def copy_to(self, target: str | os.PathLike[str], *, pages_per_step: int = COPY_PAGES_PER_STEP) -> Path:
        """Write a consistent copy of the project to the new file ``target`` with SQLite's online backup API,
        which is safe while other connections (a training worker) write; the copy is a plain rollback-journal
        file that opens on its own, flushed to disk before this returns. Refuses to overwrite an existing file.

        The copy is one snapshot (a read transaction held across the backup's steps, so writers elsewhere neither
        tear it nor restart it) written through to disk step by step, and the pages it wrote are dropped from the
        page cache as it goes: a backup of a large project leaves the cache as it found it (the model weights a
        run reads stay cached) and needs only one step's worth of fresh memory, not the whole file's."""
        target = Path(target)
        if target.exists():
            raise FileExistsError(f"{target}: a file already exists there")
        dest = sqlite3.connect(target)
        mmap_size = int(self.conn.execute("PRAGMA mmap_size").fetchone()[0])
        began = False
        fd: int | None = None
        try:
            # A new file nobody opens before this returns: a rollback journal and SQLite's syncs would only slow the
            # copy (a failed one is removed); the steps' flushes and one at the end make it durable.
            dest.execute("PRAGMA journal_mode=OFF")
            dest.execute("PRAGMA synchronous=OFF")
            fd = os.open(target, os.O_RDONLY)
            # Pages read through a memory map instead of a system call each (180,000 of them for 711 MB).
            self.conn.execute(f"PRAGMA mmap_size={COPY_MMAP_BYTES}")
            if not self.conn.in_transaction:
                self.conn.execute("BEGIN")
                began = True
            self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the snapshot starts here
            self.conn.backup(dest, pages=pages_per_step, progress=_write_through(fd), sleep=0)
            dest.execute("PRAGMA journal_mode=DELETE")
            dest.close()
            os.fsync(fd)
            _drop_cached(fd)
        except BaseException:
            dest.close()
            if fd is not None:  # closed before the removal: some systems refuse to remove an open file
                os.close(fd)
                fd = None
            target.unlink(missing_ok=True)
            raise
        finally:
            if fd is not None:
                os.close(fd)
            if began:
                self.conn.execute("COMMIT")
            self.conn.execute(f"PRAGMA mmap_size={mmap_size}")
        return target


def _drop_cached(fd: int) -> None:
    """Drop the file's clean pages from the page cache (where the system can: Linux and the BSDs)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write_through(fd: int) -> Any:
    """The backup's progress callback: flush what the step wrote, then drop it from the cache (dirty pages
    cannot be dropped, hence the flush first)."""
    if not hasattr(os, "posix_fadvise"):
        return None

    def written(_status: int, _remaining: int, _total: int) -> None:
        os.fdatasync(fd)
        _drop_cached(fd)

    return written


def examine_file(path: str | os.PathLike[str], limit: int = 5) -> tuple[int, list[str]]:
    """(schema version, integrity problems) of a project file that is not open, read without changing it (a backup
    about to be restored). Raises ``sqlite3.DatabaseError`` when SQLite cannot read it at all."""
    from .connection import _connect_read_only

    conn = _connect_read_only(Path(path))
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        # integrity_check, not quick_check: SQLite 3.40's quick_check reports false NULLs in the keys of
        # WITHOUT ROWID tables (prompt_tag) that integrity_check does not.
        rows = [r[0] for r in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    finally:
        conn.close()
    return version, ([] if rows == ["ok"] else rows)


def describe_counter(m: CounterMismatch) -> str:
    stored = "missing" if m.stored is None else f"{m.stored:,}"
    return f"counter {m.key!r} says {stored} but the project holds {m.actual:,}"


def describe_snapshot(m: SnapshotMismatch) -> str:
    return (f"snapshot {m.snapshot_id} ({m.kind}) no longer matches its content hash: rows it froze were changed "
            "or removed, so runs trained on it cannot be reproduced exactly")


def runs_to_check(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs worth checking on disk: every run except those already marked missing."""
    return [r for r in rows if not str(r.get("error") or "").startswith(MISSING_NOTE)]
