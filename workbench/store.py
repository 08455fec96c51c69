"""The project file: one SQLite database per project (WAL, foreign keys on), and every operation on it.

Every public write is one short transaction, committed before the call returns, so a crash loses nothing the
user saw acknowledged. Bulk operations (an import) wrap many writes in ``with project.transaction():`` so a
file goes in whole or not at all. Queries that the window runs on each key press (``next_pending``) are served
by partial indexes so they stay fast on a million comparisons.

sqlite-utils gives table introspection and bulk inserts; the hot paths are plain SQL on the same connection
because each of them is one statement whose plan we want to control.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import DamagedProjectError, NewerSchemaError, NotAProjectError, ReadOnlyProjectError, WorkbenchError
from .messages import canonical_json, content_hash, last_user_text, prompt_hash, response_hash, validate_messages
from .store_health import HealthMixin
from .schema import APP_ID, APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from .taxonomy import (
    BUILTIN_CATEGORIES,
    CRITERIA,
    CRITERION_VERDICTS,
    ORIGINS,
    SEVERITIES,
    SPLITS,
    STRENGTHS,
    VERDICTS,
)

DEFAULT_GUIDELINE = """# Annotation guidelines

Prefer the response that is more **helpful**, **honest** and **harmless**, in that order of weight unless the
request is harmful, in which case harmlessness comes first.

- Pick *tie* when the two are equally good; *both bad* when neither should be shown to a user.
- Strength: *slight* for a small difference, *clear* when most readers would agree, *strong* when one is
  obviously better.
- Flag harmful content with a category and severity, and flag refusals of benign requests as over-refusal.
"""


def now_iso() -> str:
    """UTC time with milliseconds, the form every timestamp in the project file takes."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Prompt:
    id: int
    messages: list[dict[str, str]]
    source: str
    split: str
    tags: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return last_user_text(self.messages)


@dataclass
class Response:
    id: int
    prompt_id: int
    content: str
    origin: str
    source: str = ""
    model: str | None = None
    adapter: str | None = None
    sampling: dict[str, Any] | None = None
    seed: int | None = None


@dataclass
class Comparison:
    id: int
    prompt_id: int
    response_a: int
    response_b: int
    verdict: str | None = None
    strength: str | None = None
    left_side: str | None = None
    criteria: dict[str, str] | None = None
    note: str | None = None
    time_spent_ms: int | None = None
    guideline_version: int | None = None
    judged_at: str | None = None
    source: str = ""
    kind: str = "train"
    retest_of: int | None = None
    retracted_at: str | None = None


def _check_choice(value: Any, allowed: Sequence[Any], what: str) -> None:
    if value not in allowed:
        raise WorkbenchError(f"{what} must be one of {', '.join(map(str, allowed))}, not {value!r}")


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


class Project(HealthMixin):
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

    # ------------------------------------------------------------------ opening, closing, migrations
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, guideline: str = DEFAULT_GUIDELINE) -> "Project":
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
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except BaseException:
            conn.close()
            for suffix in ("", "-wal", "-shm"):
                Path(str(p) + suffix).unlink(missing_ok=True)
            raise
        return project

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, migrate: bool = True, read_only: bool | None = False) -> "Project":
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
                from .paths import backups_dir

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

    def __enter__(self) -> "Project":
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
        except BaseException:
            self._depth = 0
            self.conn.execute("ROLLBACK")
            raise
        self._depth = 0
        self.conn.execute("COMMIT")

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ prompts
    def add_prompt(
        self,
        messages: list[dict[str, str]],
        *,
        source: str = "",
        tags: Iterable[str] = (),
        split: str = "train",
        created_at: str | None = None,
    ) -> tuple[int, bool]:
        """Add a prompt (a conversation ending before the assistant's reply). Returns (id, created); an equal
        conversation already in the project is reused (its tags are extended)."""
        _check_choice(split, SPLITS, "split")
        messages = validate_messages(messages)
        h = prompt_hash(messages)
        with self.transaction():
            row = self.conn.execute("SELECT id FROM prompt WHERE content_hash = ?", (h,)).fetchone()
            created = row is None
            if created:
                cur = self.conn.execute(
                    "INSERT INTO prompt (messages, title, source, split, content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (canonical_json(messages), last_user_text(messages)[:500], source, split, h, created_at or now_iso()),
                )
                pid = int(cur.lastrowid)
            else:
                pid = int(row[0])
            tags = [t for t in dict.fromkeys(tags) if t]
            if tags:
                self.conn.executemany("INSERT OR IGNORE INTO prompt_tag VALUES (?, ?)", [(pid, t) for t in tags])
        return pid, created

    def get_prompt(self, prompt_id: int) -> Prompt:
        row = self.conn.execute("SELECT id, messages, source, split FROM prompt WHERE id = ?", (prompt_id,)).fetchone()
        if row is None:
            raise WorkbenchError(f"no prompt with id {prompt_id}")
        return Prompt(row[0], json.loads(row[1]), row[2], row[3], self.prompt_tags(prompt_id))

    def prompt_tags(self, prompt_id: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT tag FROM prompt_tag WHERE prompt_id = ? ORDER BY tag", (prompt_id,))]

    def add_tags(self, prompt_id: int, tags: Iterable[str]) -> None:
        with self.transaction():
            self.conn.executemany("INSERT OR IGNORE INTO prompt_tag VALUES (?, ?)", [(prompt_id, t) for t in tags if t])

    def remove_tag(self, prompt_id: int, tag: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM prompt_tag WHERE prompt_id = ? AND tag = ?", (prompt_id, tag))

    def set_split(self, prompt_id: int, split: str) -> None:
        _check_choice(split, SPLITS, "split")
        with self.transaction():
            self.conn.execute("UPDATE prompt SET split = ? WHERE id = ?", (split, prompt_id))

    def prompt_ids(self, *, split: str | None = None, tag: str | None = None, source: str | None = None) -> list[int]:
        sql, args = "SELECT p.id FROM prompt p", []
        where = []
        if tag:
            sql += " JOIN prompt_tag t ON t.prompt_id = p.id AND t.tag = ?"
            args.append(tag)
        if split:
            where.append("p.split = ?")
            args.append(split)
        if source:
            where.append("p.source = ?")
            args.append(source)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [r[0] for r in self.conn.execute(sql + " ORDER BY p.id", args)]

    # ------------------------------------------------------------------ responses
    def add_response(
        self,
        prompt_id: int,
        content: str,
        *,
        origin: str = "imported",
        source: str = "",
        model: str | None = None,
        adapter: str | None = None,
        sampling: Mapping[str, Any] | None = None,
        seed: int | None = None,
        created_at: str | None = None,
    ) -> tuple[int, bool]:
        """Add an assistant reply to a prompt. Returns (id, created); the same text on the same prompt is reused."""
        _check_choice(origin, ORIGINS, "origin")
        if not isinstance(content, str):
            raise WorkbenchError("a response must be text")
        h = response_hash(content)
        with self.transaction():
            row = self.conn.execute(
                "SELECT id FROM response WHERE prompt_id = ? AND content_hash = ?", (prompt_id, h)
            ).fetchone()
            if row is not None:
                return int(row[0]), False
            cur = self.conn.execute(
                "INSERT INTO response (prompt_id, content, origin, source, model, adapter, sampling, seed, content_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    prompt_id, content, origin, source, model, adapter,
                    canonical_json(dict(sampling)) if sampling is not None else None, seed, h, created_at or now_iso(),
                ),
            )
        return int(cur.lastrowid), True

    def get_response(self, response_id: int) -> Response:
        row = self.conn.execute(
            "SELECT id, prompt_id, content, origin, source, model, adapter, sampling, seed FROM response WHERE id = ?",
            (response_id,),
        ).fetchone()
        if row is None:
            raise WorkbenchError(f"no response with id {response_id}")
        return Response(*row[:7], json.loads(row[7]) if row[7] else None, row[8])

    def responses_for(self, prompt_id: int) -> list[Response]:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM response WHERE prompt_id = ? ORDER BY id", (prompt_id,))]
        return [self.get_response(i) for i in ids]

    # ------------------------------------------------------------------ guidelines
    def guideline(self) -> tuple[int, str]:
        """The current guideline (version, Markdown text)."""
        row = self.conn.execute("SELECT version, text FROM guideline ORDER BY version DESC LIMIT 1").fetchone()
        return (int(row[0]), row[1]) if row else (0, "")

    def guideline_version(self) -> int:
        return self.guideline()[0]

    def set_guideline(self, text: str) -> int:
        """Store a new version of the guideline if the text changed; returns the current version."""
        with self.transaction():
            version, current = self.guideline()
            if text == current:
                return version
            self.conn.execute("INSERT INTO guideline VALUES (?, ?, ?)", (version + 1, text, now_iso()))
        return version + 1

    def guideline_versions(self) -> list[tuple[int, str, str]]:
        return [tuple(r) for r in self.conn.execute("SELECT version, created_at, text FROM guideline ORDER BY version")]

    # ------------------------------------------------------------------ comparisons (the queue)
    def find_comparison(self, response_1: int, response_2: int, *, judged_only: bool = False) -> int | None:
        """An existing comparison of these two responses (either order), if any."""
        extra = " AND verdict IS NOT NULL" if judged_only else ""
        row = self.conn.execute(
            "SELECT id FROM comparison WHERE ((response_a = ? AND response_b = ?) OR (response_a = ? AND response_b = ?))"
            + extra + " AND retracted_at IS NULL LIMIT 1",
            (response_1, response_2, response_2, response_1),
        ).fetchone()
        return int(row[0]) if row else None

    def add_comparison(
        self,
        prompt_id: int,
        response_a: int,
        response_b: int,
        *,
        source: str = "",
        kind: str = "train",
        retest_of: int | None = None,
        created_at: str | None = None,
        **judgment: Any,
    ) -> int:
        """Add a comparison of two responses to one prompt: pending unless a verdict is given in ``judgment``."""
        if response_a == response_b:
            raise WorkbenchError("a comparison needs two different responses")
        _check_choice(kind, ("train", "eval"), "kind")
        with self.transaction():
            for rid in (response_a, response_b):
                row = self.conn.execute("SELECT prompt_id FROM response WHERE id = ?", (rid,)).fetchone()
                if row is None or row[0] != prompt_id:
                    raise WorkbenchError(f"response {rid} does not belong to prompt {prompt_id}")
            cur = self.conn.execute(
                "INSERT INTO comparison (prompt_id, response_a, response_b, source, kind, retest_of, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, response_a, response_b, source, kind, retest_of, created_at or now_iso()),
            )
            cid = int(cur.lastrowid)
            if judgment.get("verdict") is not None:
                self.judge(cid, **judgment)
        return cid

    def judge(
        self,
        comparison_id: int,
        verdict: str,
        *,
        strength: str | None = None,
        left_side: str | None = None,
        criteria: Mapping[str, str] | None = None,
        note: str | None = None,
        time_spent_ms: int | None = None,
        guideline_version: int | None = None,
        judged_at: str | None = None,
    ) -> None:
        """Record a verdict (``a``/``b`` refer to response_a/response_b, not to the screen side)."""
        _check_choice(verdict, VERDICTS, "verdict")
        if strength is not None:
            _check_choice(strength, STRENGTHS, "strength")
            if verdict not in ("a", "b"):
                raise WorkbenchError("a strength applies only to a verdict for A or B, not to tie or both bad")
        if left_side is not None:
            _check_choice(left_side, ("a", "b"), "left_side")
        if criteria:
            for k, v in criteria.items():
                _check_choice(k, CRITERIA, "criterion")
                _check_choice(v, CRITERION_VERDICTS, f"verdict for {k}")
        with self.transaction():
            gv = guideline_version if guideline_version is not None else self.guideline_version()
            cur = self.conn.execute(
                "UPDATE comparison SET verdict = ?, strength = ?, left_side = COALESCE(?, left_side), criteria = ?,"
                " note = COALESCE(?, note), time_spent_ms = ?, guideline_version = ?, judged_at = ? WHERE id = ?",
                (
                    verdict, strength, left_side, canonical_json(dict(criteria)) if criteria else None, note,
                    time_spent_ms, gv, judged_at or now_iso(), comparison_id,
                ),
            )
            if cur.rowcount != 1:
                raise WorkbenchError(f"no comparison with id {comparison_id}")

    def set_note(self, comparison_id: int, note: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE comparison SET note = ? WHERE id = ?", (note, comparison_id))

    def get_comparison(self, comparison_id: int) -> Comparison:
        row = self.conn.execute(
            "SELECT id, prompt_id, response_a, response_b, verdict, strength, left_side, criteria, note, time_spent_ms,"
            " guideline_version, judged_at, source, kind, retest_of, retracted_at FROM comparison WHERE id = ?",
            (comparison_id,),
        ).fetchone()
        if row is None:
            raise WorkbenchError(f"no comparison with id {comparison_id}")
        values = list(row)
        values[7] = json.loads(values[7]) if values[7] else None
        return Comparison(*values)

    def next_pending(
        self,
        after_id: int = 0,
        *,
        source: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
        exclude: Iterable[int] = (),
    ) -> Comparison | None:
        """The next unjudged comparison with id > ``after_id`` (the queue runs in id order), optionally filtered."""
        # INDEXED BY: the planner would otherwise sort the whole pending set on a big project.
        sql = "SELECT c.id FROM comparison c INDEXED BY comparison_pending"
        args: list[Any] = []
        if tag:
            sql += " JOIN prompt_tag t ON t.prompt_id = c.prompt_id AND t.tag = ?"
            args.append(tag)
        sql += " WHERE c.verdict IS NULL AND c.retracted_at IS NULL AND c.id > ?"
        args.append(after_id)
        if source:
            sql += " AND c.source = ?"
            args.append(source)
        if kind:
            sql += " AND c.kind = ?"
            args.append(kind)
        skip = list(exclude)
        if skip:
            sql += f" AND c.id NOT IN ({','.join('?' * len(skip))})"
            args.extend(skip)
        row = self.conn.execute(sql + " ORDER BY c.id LIMIT 1", args).fetchone()
        return self.get_comparison(int(row[0])) if row else None

    def pending_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM comparison WHERE verdict IS NULL AND retracted_at IS NULL").fetchone()[0]

    def in_snapshot(self, item_type: str, item_id: int) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM snapshot_item WHERE item_type = ? AND item_id = ? LIMIT 1", (item_type, item_id)
            ).fetchone()
            is not None
        )

    def undo_judgment(self, comparison_id: int) -> str:
        """Take back a verdict. If no snapshot holds it yet the judgment is erased (the item is pending again);
        otherwise the judged row is kept, marked retracted, and a fresh pending copy takes its place in the queue.
        Returns ``"cleared"`` or ``"retracted"``."""
        with self.transaction():
            c = self.get_comparison(comparison_id)
            if c.verdict is None:
                raise WorkbenchError(f"comparison {comparison_id} has no judgment to undo")
            if self.in_snapshot("comparison", comparison_id):
                self.conn.execute("UPDATE comparison SET retracted_at = ? WHERE id = ?", (now_iso(), comparison_id))
                self.add_comparison(c.prompt_id, c.response_a, c.response_b, source=c.source, kind=c.kind, retest_of=c.retest_of)
                return "retracted"
            self.conn.execute(
                "UPDATE comparison SET verdict = NULL, strength = NULL, criteria = NULL, time_spent_ms = NULL,"
                " guideline_version = NULL, judged_at = NULL WHERE id = ?",
                (comparison_id,),
            )
            return "cleared"

    def retract(self, item_type: str, item_id: int) -> str:
        """Withdraw a judgment, ranking, demonstration or flag: deleted when no snapshot holds it, else marked
        retracted so old runs stay reproducible. Returns ``"deleted"`` or ``"retracted"``."""
        table = {"comparison": "comparison", "ranking": "ranking", "demonstration": "demonstration", "flag": "safety_flag"}
        if item_type not in table:
            raise WorkbenchError(f"cannot retract a {item_type}")
        with self.transaction():
            # A row that a snapshot holds, or that a retest points at, is kept and marked: deleting an original
            # would cut its retest loose and let the retest pass for an ordinary judgment.
            has_retest = item_type in ("comparison", "ranking") and self.conn.execute(
                f"SELECT 1 FROM {table[item_type]} WHERE retest_of = ? LIMIT 1", (item_id,)
            ).fetchone()
            if has_retest or self.in_snapshot(item_type, item_id):
                self.conn.execute(f"UPDATE {table[item_type]} SET retracted_at = ? WHERE id = ?", (now_iso(), item_id))
                return "retracted"
            if item_type == "demonstration":
                row = self.conn.execute("SELECT response_id FROM demonstration WHERE id = ?", (item_id,)).fetchone()
                self.conn.execute("DELETE FROM demonstration WHERE id = ?", (item_id,))
                if row:
                    self._delete_response_if_unused(row[0])
            else:
                self.conn.execute(f"DELETE FROM {table[item_type]} WHERE id = ?", (item_id,))
            return "deleted"

    def _delete_response_if_unused(self, response_id: int) -> None:
        used = self.conn.execute(
            "SELECT 1 FROM comparison WHERE response_a = ?1 OR response_b = ?1 UNION ALL "
            "SELECT 1 FROM ranking_entry WHERE response_id = ?1 UNION ALL SELECT 1 FROM demonstration WHERE response_id = ?1 "
            "UNION ALL SELECT 1 FROM safety_flag WHERE response_id = ?1 LIMIT 1",
            (response_id,),
        ).fetchone()
        if not used:
            self.conn.execute("DELETE FROM response WHERE id = ?", (response_id,))

    def add_retest(self, comparison_id: int) -> int:
        """A blind repeat of a judged comparison, linked to it (kept out of training and export by default)."""
        c = self.get_comparison(comparison_id)
        return self.add_comparison(c.prompt_id, c.response_a, c.response_b, source=c.source, kind=c.kind, retest_of=c.id)

    # ------------------------------------------------------------------ rankings
    def add_ranking(
        self,
        prompt_id: int,
        ranks: Mapping[int, int],
        *,
        note: str | None = None,
        time_spent_ms: int | None = None,
        source: str = "",
        guideline_version: int | None = None,
        judged_at: str | None = None,
        retest_of: int | None = None,
        created_at: str | None = None,
    ) -> int:
        """Record a ranking: ``ranks`` maps response id → rank (1 best; equal ranks are ties), 2 to 9 responses."""
        if not 2 <= len(ranks) <= 9:
            raise WorkbenchError(f"a ranking orders 2 to 9 responses, not {len(ranks)}")
        with self.transaction():
            for rid, rank in ranks.items():
                row = self.conn.execute("SELECT prompt_id FROM response WHERE id = ?", (rid,)).fetchone()
                if row is None or row[0] != prompt_id:
                    raise WorkbenchError(f"response {rid} does not belong to prompt {prompt_id}")
                if not isinstance(rank, int) or rank < 1:
                    raise WorkbenchError(f"rank of response {rid} must be a positive integer, not {rank!r}")
            gv = guideline_version if guideline_version is not None else self.guideline_version()
            stamp = now_iso()
            cur = self.conn.execute(
                "INSERT INTO ranking (prompt_id, note, time_spent_ms, guideline_version, source, retest_of, judged_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, note, time_spent_ms, gv, source, retest_of, judged_at or stamp, created_at or stamp),
            )
            rk = int(cur.lastrowid)
            self.conn.executemany("INSERT INTO ranking_entry VALUES (?, ?, ?)", [(rk, r, n) for r, n in ranks.items()])
        return rk

    def get_ranking(self, ranking_id: int) -> dict[int, int]:
        return {
            r: n
            for r, n in self.conn.execute(
                "SELECT response_id, rank FROM ranking_entry WHERE ranking_id = ? ORDER BY rank, response_id", (ranking_id,)
            )
        }

    # ------------------------------------------------------------------ demonstrations
    def add_demonstration(
        self,
        prompt_id: int,
        content: str,
        *,
        edited_from: int | None = None,
        note: str | None = None,
        time_spent_ms: int | None = None,
        source: str = "",
        guideline_version: int | None = None,
        created_at: str | None = None,
    ) -> tuple[int, int, bool]:
        """Store an expert-written answer as a response (origin ``expert``) and a demonstration pointing at it.
        Returns (demonstration id, response id, created)."""
        if not content.strip():
            raise WorkbenchError("a demonstration needs some text")
        with self.transaction():
            rid, _ = self.add_response(prompt_id, content, origin="expert", source=source)
            row = self.conn.execute("SELECT id FROM demonstration WHERE response_id = ?", (rid,)).fetchone()
            if row:
                return int(row[0]), rid, False
            gv = guideline_version if guideline_version is not None else self.guideline_version()
            cur = self.conn.execute(
                "INSERT INTO demonstration (prompt_id, response_id, edited_from, note, time_spent_ms, guideline_version, source, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, rid, edited_from, note, time_spent_ms, gv, source, created_at or now_iso()),
            )
        return int(cur.lastrowid), rid, True

    def write_better_answer(
        self, comparison_id: int, content: str, *, time_spent_ms: int | None = None, note: str | None = None
    ) -> tuple[int, list[int]]:
        """The expert's own answer beats both responses shown: one demonstration and, against each shown
        response, a judged comparison it wins (strength clear). Returns (demonstration id, comparison ids)."""
        with self.transaction():
            c = self.get_comparison(comparison_id)
            demo_id, rid, _ = self.add_demonstration(c.prompt_id, content, time_spent_ms=time_spent_ms, note=note)
            made = []
            for other in (c.response_a, c.response_b):
                if other == rid:
                    continue
                made.append(
                    self.add_comparison(
                        c.prompt_id, rid, other, source="expert", kind=c.kind,
                        verdict="a", strength="clear", left_side="a", note="written answer beats the shown response",
                    )
                )
        return demo_id, made

    # ------------------------------------------------------------------ safety flags
    def categories(self) -> list[tuple[str, str, str, bool]]:
        return [
            (k, lbl, d, bool(b))
            for k, lbl, d, b in self.conn.execute("SELECT key, label, description, builtin FROM flag_category ORDER BY builtin DESC, rowid")
        ]

    def add_category(self, key: str, label: str, description: str = "") -> None:
        """Extend this project's taxonomy with a category of its own."""
        if not key or not key.replace("_", "").replace("-", "").isalnum():
            raise WorkbenchError(f"category key {key!r}: use letters, digits, '-' and '_'")
        with self.transaction():
            self.conn.execute(
                "INSERT INTO flag_category (key, label, description, builtin) VALUES (?, ?, ?, 0) "
                "ON CONFLICT(key) DO UPDATE SET label = excluded.label, description = excluded.description",
                (key, label, description),
            )

    def add_flag(
        self,
        prompt_id: int,
        category: str,
        severity: str | None = "medium",
        *,
        response_id: int | None = None,
        note: str | None = None,
        present: bool = True,
        source: str = "",
        guideline_version: int | None = None,
        created_at: str | None = None,
    ) -> int:
        """Flag a response (or, with no response, the prompt text) in a category with a severity. ``present=False``
        records that the category was checked and is absent (a negative label for the safety classifier)."""
        if present:
            _check_choice(severity, SEVERITIES, "severity")
        elif severity is not None:
            _check_choice(severity, SEVERITIES, "severity")
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM flag_category WHERE key = ?", (category,)).fetchone() is None:
                raise WorkbenchError(f"unknown flag category {category!r}; add it to the project's taxonomy first")
            gv = guideline_version if guideline_version is not None else self.guideline_version()
            cur = self.conn.execute(
                "INSERT INTO safety_flag (prompt_id, response_id, category, present, severity, note, source, guideline_version, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, response_id, category, int(present), severity, note, source, gv, created_at or now_iso()),
            )
        return int(cur.lastrowid)

    def flags_for_response(self, response_id: int) -> list[tuple[int, str, str, str | None]]:
        return [
            tuple(r)
            for r in self.conn.execute(
                "SELECT id, category, severity, note FROM safety_flag WHERE response_id = ? AND present = 1 AND retracted_at IS NULL",
                (response_id,),
            )
        ]

    # ------------------------------------------------------------------ snapshots
    def create_snapshot(
        self, kind: str, items: Mapping[str, Iterable[int]], *, options: Mapping[str, Any] | None = None, note: str = ""
    ) -> int:
        """Freeze a set of rows (item type → ids) with a content hash over them, so a run or export is reproducible."""
        frozen = {t: sorted(set(ids)) for t, ids in items.items()}
        counts = {t: len(ids) for t, ids in frozen.items()}
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO snapshot (kind, content_hash, counts, options, note, created_at) VALUES (?, '', ?, ?, ?, ?)",
                (kind, canonical_json(counts), canonical_json(dict(options or {})), note, now_iso()),
            )
            sid = int(cur.lastrowid)
            self.conn.executemany(
                "INSERT INTO snapshot_item VALUES (?, ?, ?)", ((sid, t, i) for t, ids in frozen.items() for i in ids)
            )
            self.conn.execute("UPDATE snapshot SET content_hash = ? WHERE id = ?", (self._snapshot_digest(sid, kind), sid))
        return sid

    # What a snapshot's hash covers besides the ids: the judged content of each row (not volatile notes).
    _SNAPSHOT_CONTENT_SQL = {
        "comparison": "SELECT c.id, ra.content_hash, rb.content_hash, c.verdict, c.strength FROM snapshot_item s "
        "JOIN comparison c ON c.id = s.item_id JOIN response ra ON ra.id = c.response_a "
        "JOIN response rb ON rb.id = c.response_b WHERE s.snapshot_id = ? AND s.item_type = 'comparison' ORDER BY c.id",
        "demonstration": "SELECT d.id, r.content_hash FROM snapshot_item s JOIN demonstration d ON d.id = s.item_id "
        "JOIN response r ON r.id = d.response_id WHERE s.snapshot_id = ? AND s.item_type = 'demonstration' ORDER BY d.id",
        "ranking": "SELECT e.ranking_id, r.content_hash, e.rank FROM snapshot_item s JOIN ranking_entry e ON e.ranking_id = s.item_id "
        "JOIN response r ON r.id = e.response_id WHERE s.snapshot_id = ? AND s.item_type = 'ranking' ORDER BY e.ranking_id, r.content_hash",
        "flag": "SELECT f.id, f.category, f.present, f.severity FROM snapshot_item s JOIN safety_flag f ON f.id = s.item_id "
        "WHERE s.snapshot_id = ? AND s.item_type = 'flag' ORDER BY f.id",
    }

    def _snapshot_digest(self, snapshot_id: int, kind: str) -> str:
        """SHA-256 over the snapshot's kind, item ids and the content they point at, streamed from SQL."""
        digest = hashlib.sha256(kind.encode())
        types = [r[0] for r in self.conn.execute(
            "SELECT DISTINCT item_type FROM snapshot_item WHERE snapshot_id = ? ORDER BY item_type", (snapshot_id,))]
        for t in types:
            digest.update(f"\x00{t}\x00".encode())
            for (i,) in self.conn.execute(
                "SELECT item_id FROM snapshot_item WHERE snapshot_id = ? AND item_type = ? ORDER BY item_id", (snapshot_id, t)
            ):
                digest.update(b"%d," % i)
            sql = self._SNAPSHOT_CONTENT_SQL.get(t)
            if sql:
                for row in self.conn.execute(sql, (snapshot_id,)):
                    digest.update(repr(row).encode())
        return digest.hexdigest()

    def snapshot_items(self, snapshot_id: int, item_type: str) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT item_id FROM snapshot_item WHERE snapshot_id = ? AND item_type = ? ORDER BY item_id", (snapshot_id, item_type)
            )
        ]

    def snapshots(self) -> list[dict[str, Any]]:
        return [
            {"id": r[0], "kind": r[1], "content_hash": r[2], "counts": json.loads(r[3]), "options": json.loads(r[4]), "created_at": r[5]}
            for r in self.conn.execute("SELECT id, kind, content_hash, counts, options, created_at FROM snapshot ORDER BY id")
        ]

    # ------------------------------------------------------------------ runs, metrics, checkpoints
    def create_run(
        self,
        stage: str,
        config: Mapping[str, Any],
        *,
        name: str = "",
        base_model: str | None = None,
        adapter_from: str | None = None,
        snapshot_id: int | None = None,
        output_dir: str | None = None,
        parent_run: int | None = None,
    ) -> int:
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO run (stage, name, base_model, adapter_from, snapshot_id, config, output_dir, parent_run, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (stage, name, base_model, adapter_from, snapshot_id, canonical_json(dict(config)), output_dir, parent_run, now_iso()),
            )
        return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields: Any) -> None:
        allowed = {"status", "pid", "error", "final_metrics", "output_dir", "started_at", "finished_at", "snapshot_id", "name", "config"}
        bad = set(fields) - allowed
        if bad:
            raise WorkbenchError(f"cannot update run fields {sorted(bad)}")
        if "status" in fields:
            _check_choice(fields["status"], ("pending", "running", "done", "failed", "cancelled"), "status")
        values = {k: canonical_json(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
        with self.transaction():
            self.conn.execute(
                f"UPDATE run SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?", [*values.values(), run_id]
            )

    def get_run(self, run_id: int) -> dict[str, Any]:
        cur = self.conn.execute("SELECT * FROM run WHERE id = ?", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise WorkbenchError(f"no run with id {run_id}")
        run = dict(zip([d[0] for d in cur.description], row))
        for k in ("config", "final_metrics"):
            run[k] = json.loads(run[k]) if run[k] else ({} if k == "config" else None)
        return run

    def runs(self) -> list[dict[str, Any]]:
        return [self.get_run(r[0]) for r in self.conn.execute("SELECT id FROM run ORDER BY id")]

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> None:
        t = time.time() if wall_time is None else wall_time
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO metric VALUES (?, ?, ?, ?, ?)",
                [(run_id, step, k, float(v) if v is not None else None, t) for k, v in metrics.items()],
            )

    def metrics(self, run_id: int, key: str | None = None) -> list[tuple[int, str, float]]:
        if key:
            rows = self.conn.execute("SELECT step, key, value FROM metric WHERE run_id = ? AND key = ? ORDER BY step", (run_id, key))
        else:
            rows = self.conn.execute("SELECT step, key, value FROM metric WHERE run_id = ? ORDER BY key, step", (run_id,))
        return [tuple(r) for r in rows]

    def add_checkpoint(self, run_id: int, step: int, path: str, *, metrics: Mapping[str, float] | None = None, is_best: bool = False) -> int:
        with self.transaction():
            if is_best:
                self.conn.execute("UPDATE checkpoint SET is_best = 0 WHERE run_id = ?", (run_id,))
            cur = self.conn.execute(
                "INSERT INTO checkpoint (run_id, step, path, is_best, metrics, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, step, path, int(is_best), canonical_json(dict(metrics or {})), now_iso()),
            )
        return int(cur.lastrowid)

    def forget_missing_checkpoints(self, run_id: int) -> int:
        """Delete the rows of ``run_id``'s checkpoints whose folder is gone (pruned); returns how many."""
        rows = self.conn.execute("SELECT id, path FROM checkpoint WHERE run_id = ?", (run_id,)).fetchall()
        gone = [(r[0],) for r in rows if not Path(r[1]).exists()]
        if gone:
            with self.transaction():
                self.conn.executemany("DELETE FROM checkpoint WHERE id = ?", gone)
        return len(gone)

    def delete_run(self, run_id: int) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM run WHERE id = ?", (run_id,))

    # ------------------------------------------------------------------ statistics
    def stats(self) -> dict[str, Any]:
        """Counts for the status bar and ``workbench stats``: totals plus verdict, strength and flag breakdowns."""
        counts = dict(self.conn.execute("SELECT key, n FROM counter"))
        verdicts = {v: counts.get(f"verdict:{v}", 0) for v in (*VERDICTS, "pending")}
        strengths = {s: counts.get(f"strength:{s}", 0) for s in STRENGTHS}
        flag_categories = {
            k.split(":", 1)[1]: n for k, n in sorted(counts.items()) if k.startswith("flag:") and n
        }
        q = lambda sql: self.conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "prompts": counts["prompts"],
            "heldout_prompts": counts["heldout_prompts"],
            "responses": counts["responses"],
            "comparisons": counts["comparisons"],
            "judged": sum(verdicts.values()) - verdicts["pending"],
            "pending": verdicts["pending"],
            "retracted": counts["retracted"],
            "retests": counts["retests"],
            "rankings": counts["rankings"],
            "demonstrations": counts["demonstrations"],
            "flags": counts["flags"],
            "safety_labels": counts["safety_labels"],
            "snapshots": q("SELECT COUNT(*) FROM snapshot"),
            "runs": q("SELECT COUNT(*) FROM run"),
            "guideline_version": self.guideline_version(),
            "verdicts": verdicts,
            "strengths": strengths,
            "flag_categories": flag_categories,
        }


SQLITE_MAGIC = b"SQLite format 3\x00"


def looks_like_damaged_project(path: Path) -> bool:
    """A file SQLite will not read that was still ours: SQLite's magic or our application id in its header, or
    the backups or runs folder this app keeps beside a project. (Read with a plain open() only on this failure
    path: see :func:`is_project_file` on why not otherwise.)"""
    from .paths import backups_dir, runs_dir

    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError:
        return False
    ours = len(head) >= 72 and int.from_bytes(head[68:72], "big") == APPLICATION_ID
    return head.startswith(SQLITE_MAGIC) or ours or backups_dir(path).is_dir() or runs_dir(path).is_dir()


def damaged_message(path: Path, why: str) -> str:
    """"damaged", why, and what to do: restore the newest backup when there is one."""
    from .paths import backups_dir

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
        probe = path.with_name(f".{path.name}.write-probe")
        probe.touch()
        probe.unlink()
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


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, so one user action is exactly one transaction.
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across app crashes, commits stay fast
    return conn


def copy_project(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a closed project file with its WAL side files (for tests and backups of closed projects)."""
    for suffix in ("", "-wal", "-shm"):
        s = Path(str(src) + suffix)
        if s.exists():
            shutil.copy2(s, str(dst) + suffix)
