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
import tempfile
from collections.abc import Iterator
from datetime import datetime
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DamagedProjectError, DiskFullError, NewerSchemaError, NotAProjectError, ReadOnlyProjectError, WorkbenchError
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
    return application_id(path) == APPLICATION_ID


def application_id(path: str | os.PathLike[str]) -> int | None:
    """The SQLite application id in the file's header (read through SQLite: see :func:`is_project_file`), or None
    when SQLite cannot read the file (not SQLite, or a damaged header)."""
    return _read_application_id(Path(path))[0]


def _read_application_id(p: Path) -> tuple[int | None, str]:
    """(application id or None, SQLite's error when it could not read it)."""
    if not p.is_file():
        return None, "not a file"
    try:
        conn = _connect_read_only(p)
        try:
            return int(conn.execute("PRAGMA application_id").fetchone()[0]), ""
        finally:
            conn.close()
    except sqlite3.Error as e:
        return None, str(e)


def copy_project(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a closed project file with its WAL side files (for tests and backups of closed projects)."""
    for suffix in ("", "-wal", "-shm"):
        s = Path(str(src) + suffix)
        if s.exists():
            shutil.copy2(s, str(dst) + suffix)


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (with ``ESCAPE '\\'``) matching text that starts with ``prefix`` taken literally."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


SQLITE_MAGIC = b"SQLite format 3\x00"


def looks_like_damaged_project(path: Path) -> bool:
    """A file SQLite will not read that was still ours: SQLite's magic or our application id in its header, or
    the backups or runs folder this app keeps beside a project. (Read with a plain open() only on this failure
    path: see :func:`is_project_file` on why not otherwise.)"""
    from ..paths import backups_dir, runs_dir

    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError:
        return False
    ours = len(head) >= 72 and int.from_bytes(head[68:72], "big") == APPLICATION_ID
    return head.startswith(SQLITE_MAGIC) or ours or backups_dir(path).is_dir() or runs_dir(path).is_dir()


def damaged_message(path: Path, why: str) -> str:
    """"damaged", why, and what to do: restore the newest backup when there is one."""
    from ..paths import backups_dir

    backups = sorted(backups_dir(path).glob("*.wbp"), key=lambda b: b.stat().st_mtime) if backups_dir(path).is_dir() else []
    if backups:
        advice = (f"the newest backup is {backups[-1]}; restore it with `workbench restore {backups[-1]} {path}` "
                  "(the damaged file is kept beside it)")
    else:
        advice = f"no backup was found in {backups_dir(path)}; `workbench check {path}` lists what is wrong"
    return f"{path}: damaged project file ({why}); {advice}"


def _probe(conn: sqlite3.Connection, version: int) -> None:
    """Touch the pages every open needs (schema, settings, counters) so a truncated file fails here, cleanly."""
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    if version >= 1:  # the tables of schema 1 (a file at version 0 is a new, empty one)
        conn.execute("SELECT COUNT(*) FROM meta").fetchone()
        conn.execute("SELECT COUNT(*) FROM counter").fetchone()


def _writable(path: Path) -> bool:
    """Whether SQLite can write the project: the file, and its folder (for the WAL side files)."""
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return False
    # os.access says yes to root even for an immutable file or folder: ask SQLite for a write lock.
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        # A name of its own: the processes of one run check the same folder at the same moment.
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".write-probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
        return True
    except (sqlite3.OperationalError, OSError):
        return False
    finally:
        conn.close()


def _connect_read_only(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as e:
        if "unable to open" not in str(e):
            raise
        # A WAL file in a read-only folder without its side files: read it as it is on disk.
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _is_disk_full(error: BaseException) -> bool:
    """SQLITE_FULL (a full disk, or ``max_page_count`` reached) or an ENOSPC from the file system."""
    if isinstance(error, sqlite3.OperationalError):
        code = getattr(error, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(error)
    return isinstance(error, OSError) and error.errno == 28  # ENOSPC


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
        self.read_only = False

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
    def open(cls, path: str | os.PathLike[str], *, migrate: bool = True, read_only: bool | None = False) -> Any:
        """Open an existing project. Refuses files that are not projects or come from a newer app, says "damaged"
        (naming the newest backup) for a project SQLite can no longer read, backs up and migrates older ones.

        ``read_only``: False (the default) refuses a file or folder that is not writable with a clear message; True
        opens it for reading only; None opens it writable when it can be and read-only otherwise
        (``project.read_only`` says which), as the window does."""
        p = Path(path)
        if not p.exists():
            raise NotAProjectError(f"{p}: no such project file (create one with `workbench init {p}`)")
        if p.is_dir():
            raise NotAProjectError(f"{p}: is a folder, not a project file")
        app, why = _read_application_id(p)
        if app != APPLICATION_ID:
            if app is None and looks_like_damaged_project(p):
                raise DamagedProjectError(damaged_message(p, f"SQLite: {why}"))
            raise NotAProjectError(f"{p}: not an RLHF Workbench project (not an SQLite file made by this app)")
        writable = read_only is not True and _writable(p)
        if read_only is False and not writable:
            raise ReadOnlyProjectError(
                f"{p}: the project file or its folder is not writable; make it writable, or open it in the window, "
                "which shows it read-only")
        conn = _connect(p) if writable else _connect_read_only(p)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            _probe(conn, version)
            if version > SCHEMA_VERSION:
                raise NewerSchemaError(
                    f"{p}: written by a newer RLHF Workbench (schema {version}, this app reads up to "
                    f"{SCHEMA_VERSION}); update the app to open it"
                )
            project = cls(p, conn)
            project.read_only = not writable
            if version < SCHEMA_VERSION:
                if not migrate or not writable:
                    raise WorkbenchError(f"{p}: schema {version} needs migrating to {SCHEMA_VERSION}")
                from ..paths import backups_dir

                backups_dir(p).mkdir(exist_ok=True)
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                project.copy_to(backups_dir(p) / f"{p.name.removesuffix('.wbp')}-{stamp}-before-migration-v{version}.wbp")
                project._migrate(version)
            if writable and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as e:
            conn.close()
            raise DamagedProjectError(damaged_message(p, f"SQLite: {e}")) from e
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
        if self.read_only:
            raise ReadOnlyProjectError(f"{self.path}: opened read-only (its file or folder is not writable); "
                                       "copy it somewhere writable to change it")
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
            self.conn.execute("COMMIT")
        except BaseException as e:
            self._depth = 0
            if self.conn.in_transaction:  # SQLite rolls some failed transactions back by itself (a full disk)
                self.conn.execute("ROLLBACK")
            if _is_disk_full(e):
                raise DiskFullError(
                    f"{self.path}: the disk is full (or the project reached its size limit): nothing of this change "
                    "was saved and the project is as it was before; free some space and try again") from e
            raise
        self._depth = 0

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
