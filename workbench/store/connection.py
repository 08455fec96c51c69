"""Opening a project file: the SQLite connection and its pragmas, creating and migrating the schema, transactions,
consistent copies (backups) and WAL checkpoints. Every area of the store (:mod:`workbench.store`) builds on
:class:`ProjectFile`.

Every public write is one short transaction, committed before the call returns, so a crash loses nothing the user
saw acknowledged. Bulk operations (an import) wrap many writes in ``with project.transaction():`` so a file goes
in whole or not at all; a long read that must see every table at one instant (an export) runs in
``with project.read_transaction():``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import NewerSchemaError, NotAProjectError, WorkbenchError
from ..schema import APP_ID, APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from ..taxonomy import BUILTIN_CATEGORIES
from .records import now_iso

DEFAULT_GUIDELINE = """# Annotation guidelines

Prefer the response that is more **helpful**, **honest** and **harmless**, in that order of weight unless the
request is harmful, in which case harmlessness comes first.

- Pick *tie* when the two are equally good; *both bad* when neither should be shown to a user.
- Strength: *slight* for a small difference, *clear* when most readers would agree, *strong* when one is
  obviously better.
- Flag harmful content with a category and severity, and flag refusals of benign requests as over-refusal.
"""

WAL_CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")


def is_project_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an SQLite file that carries our application id, read without changing it.

    The header is read through SQLite itself, never with a plain open()/close(): on POSIX, closing any descriptor
    of a file drops every lock this process holds on it, including those of an open project connection, after
    which another process closing its connection would delete the WAL index under this one's feet.
    """
    p = Path(path)
    if not p.is_file():
        return False
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def copy_project(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a closed project file with its WAL side files (for tests and backups of closed projects)."""
    for suffix in ("", "-wal", "-shm"):
        s = Path(str(src) + suffix)
        if s.exists():
            shutil.copy2(s, str(dst) + suffix)


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (with ``ESCAPE '\\'``) matching text that starts with ``prefix`` taken literally."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so one user action is exactly one transaction.
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across app crashes, commits stay fast
    return conn


class ProjectFile:
    """An open project file. Create with :meth:`create` or :meth:`open`; close with :meth:`close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn
        self._depth = 0

    @property
    def db(self) -> Any:
        """A sqlite-utils view of the same connection (imported on first use: it costs startup time)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    @property
    def is_open(self) -> bool:
        """False once :meth:`close` ran (a page may outlive the project it showed)."""
        return self.conn is not None

    # ------------------------------------------------------------------ opening, closing, migrations
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, guideline: str = DEFAULT_GUIDELINE) -> Any:
        """Create a new project file; refuses to overwrite an existing file."""
        p = Path(path)
        if p.exists():
            raise WorkbenchError(f"{p}: a file already exists there; open it or pick another name")
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(p)
        project = cls(p, conn)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            project._migrate(0)
            with project.transaction():
                conn.execute("INSERT INTO meta VALUES ('app', ?), ('created_at', ?)", (APP_ID, now_iso()))
                conn.executemany(
                    "INSERT INTO flag_category (key, label, description, builtin) VALUES (?, ?, ?, 1)",
                    [(c.key, c.label, c.description) for c in BUILTIN_CATEGORIES],
                )
                conn.execute("INSERT INTO guideline VALUES (1, ?, ?)", (guideline, now_iso()))
            # Put the header (application id) into the main file now, so other processes recognise the file
            # while this connection still holds the WAL open.
            project.checkpoint_wal("TRUNCATE")
        except BaseException:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(p) + suffix).unlink(missing_ok=True)
            raise
        return project

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, migrate: bool = True) -> Any:
        """Open an existing project. Refuses files that are not projects or come from a newer app; backs up and
        migrates older ones."""
        p = Path(path)
        if not p.exists():
            raise NotAProjectError(f"{p}: no such project file (create one with `workbench init {p}`)")
        if p.is_dir():
            raise NotAProjectError(f"{p}: is a folder, not a project file")
        if not is_project_file(p):
            raise NotAProjectError(f"{p}: not an RLHF Workbench project (not an SQLite file made by this app)")
        conn = _connect(p)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise NewerSchemaError(
                    f"{p}: written by a newer RLHF Workbench (schema {version}, this app reads up to "
                    f"{SCHEMA_VERSION}); update the app to open it"
                )
            project = cls(p, conn)
            if version < SCHEMA_VERSION:
                if not migrate:
                    raise WorkbenchError(f"{p}: schema {version} needs migrating to {SCHEMA_VERSION}")
                project.backup(p.with_name(f"{p.name}.v{version}.bak"))
                project._migrate(version)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise NotAProjectError(f"{p}: not a readable project file ({e})") from e
        except BaseException:
            conn.close()
            raise
        return project

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None  # type: ignore[assignment]

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backup(self, target: str | os.PathLike[str]) -> Path:
        """A consistent full copy of the project (SQLite's online backup: safe while others write)."""
        target = Path(target)
        if target.exists():
            target = target.with_name(f"{target.name}.{int(time.time())}")
        dest = sqlite3.connect(target)
        try:
            self.conn.backup(dest)
        finally:
            dest.close()
        return target

    def _migrate(self, version: int) -> None:
        for v in range(version, SCHEMA_VERSION):
            # One script per step, inside its own transaction: a failed step leaves the file at version v.
            try:
                self.conn.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[v]}\nPRAGMA user_version={v + 1};\nCOMMIT;")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # ------------------------------------------------------------------ WAL upkeep
    def checkpoint_wal(self, mode: str = "PASSIVE") -> None:
        """Copy the write-ahead log into the main file (``TRUNCATE`` also empties the log: a file ready to copy)."""
        if mode not in WAL_CHECKPOINT_MODES:
            raise WorkbenchError(f"checkpoint mode must be one of {', '.join(WAL_CHECKPOINT_MODES)}, not {mode!r}")
        self.conn.execute(f"PRAGMA wal_checkpoint({mode})")

    def defer_wal_checkpoints(self) -> None:
        """Stop this connection's automatic WAL checkpoints: the owner calls :meth:`checkpoint_wal` when idle.
        SQLite's automatic checkpoint runs inside whichever commit crosses 1000 pages (~0.4 s on a million
        comparisons), which a window must not pay inside a key press."""
        self.conn.execute("PRAGMA wal_autocheckpoint=0")

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction (BEGIN IMMEDIATE … COMMIT); nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.conn
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    @contextmanager
    def read_transaction(self) -> Iterator[None]:
        """Reads inside see every table at one instant (a deferred BEGIN … COMMIT); inside a transaction already
        open, they join it."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")
