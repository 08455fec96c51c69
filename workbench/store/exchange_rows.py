"""The rows the lossless project exchange (:mod:`workbench.exchange`) writes out and reads back in: every table's
annotation rows joined to the content hashes the file refers to rows by, and on import the look-ups by content and
the inserts that keep every field of the file (timestamps, retractions, guideline versions) as it was.

The rules (keys, merging, what counts as a duplicate) live in :mod:`workbench.exchange`; here are only the queries.
The import calls these inside its one transaction; they neither begin nor commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from .connection import ProjectFile

# Record type of the exchange → the table it comes from.
EXCHANGE_TABLES = {
    "guideline": "guideline", "category": "flag_category", "prompt": "prompt", "response": "response",
    "comparison": "comparison", "ranking": "ranking", "demonstration": "demonstration", "flag": "safety_flag",
}
_RETEST_TABLES = ("comparison", "ranking")

# What each record type is read from, in id order. Comparisons, rankings and flags carry their rank among rows
# that share everything their key is made of (ROW_NUMBER over the same partition), so equal rows stay apart.
_EXPORT_SQL = {
    "guideline": "SELECT version, text, created_at FROM guideline ORDER BY version",
    "category": "SELECT key, label, description, builtin FROM flag_category ORDER BY rowid",
    "prompt": (
        "SELECT p.content_hash, p.messages, p.source, p.split, p.created_at,"
        " (SELECT json_group_array(tag) FROM (SELECT tag FROM prompt_tag t WHERE t.prompt_id = p.id ORDER BY tag))"
        " FROM prompt p ORDER BY p.id"
    ),
    "response": (
        "SELECT p.content_hash, r.content_hash, r.content, r.origin, r.source, r.model, r.adapter, r.sampling, r.seed,"
        " r.created_at FROM response r JOIN prompt p ON p.id = r.prompt_id ORDER BY r.id"
    ),
    "comparison": (
        "SELECT c.id, p.content_hash, ra.content_hash, rb.content_hash, c.left_side, c.verdict, c.strength, c.criteria,"
        " c.note, c.time_spent_ms, c.guideline_version, c.judged_at, c.source, c.kind, c.retest_of, c.retracted_at,"
        " c.created_at,"
        " ROW_NUMBER() OVER (PARTITION BY c.response_a, c.response_b, c.created_at ORDER BY c.id) - 1"
        " FROM comparison c JOIN prompt p ON p.id = c.prompt_id JOIN response ra ON ra.id = c.response_a"
        " JOIN response rb ON rb.id = c.response_b ORDER BY c.id"
    ),
    "ranking": (
        "SELECT p.content_hash, r.note, r.time_spent_ms, r.guideline_version, r.source, r.retest_of, r.judged_at,"
        " r.retracted_at, r.created_at,"
        " ROW_NUMBER() OVER (PARTITION BY r.prompt_id, r.created_at ORDER BY r.id) - 1,"
        " (SELECT json_group_array(json_array(h, rank)) FROM (SELECT resp.content_hash AS h, e.rank AS rank"
        "   FROM ranking_entry e JOIN response resp ON resp.id = e.response_id WHERE e.ranking_id = r.id"
        "   ORDER BY e.rank, resp.content_hash))"
        " FROM ranking r JOIN prompt p ON p.id = r.prompt_id ORDER BY r.id"
    ),
    "demonstration": (
        "SELECT p.content_hash, r.content_hash, ef.content_hash, efp.content_hash, d.note, d.time_spent_ms,"
        " d.guideline_version, d.source, d.retracted_at, d.created_at FROM demonstration d"
        " JOIN prompt p ON p.id = d.prompt_id JOIN response r ON r.id = d.response_id"
        " LEFT JOIN response ef ON ef.id = d.edited_from LEFT JOIN prompt efp ON efp.id = ef.prompt_id ORDER BY d.id"
    ),
    "flag": (
        "SELECT p.content_hash, r.content_hash, f.category, f.present, f.severity, f.note, f.source,"
        " f.guideline_version, f.retracted_at, f.created_at,"
        " ROW_NUMBER() OVER (PARTITION BY f.prompt_id, f.response_id, f.category, f.created_at ORDER BY f.id) - 1"
        " FROM safety_flag f JOIN prompt p ON p.id = f.prompt_id LEFT JOIN response r ON r.id = f.response_id"
        " ORDER BY f.id"
    ),
}

# Rows that retests (of comparisons or rankings) point at, with what their keys are made of; the rank among equals
# is counted directly (these rows are few).
_RETEST_TARGET_SQL = {
    "comparison": (
        "SELECT c.id, p.content_hash, ra.content_hash, rb.content_hash, c.created_at,"
        " (SELECT COUNT(*) FROM comparison c2 WHERE c2.response_a = c.response_a AND c2.response_b = c.response_b"
        "  AND c2.created_at = c.created_at AND c2.id < c.id)"
        " FROM comparison c JOIN prompt p ON p.id = c.prompt_id JOIN response ra ON ra.id = c.response_a"
        " JOIN response rb ON rb.id = c.response_b"
        " WHERE c.id IN (SELECT retest_of FROM comparison WHERE retest_of IS NOT NULL)"
    ),
    "ranking": (
        "SELECT r.id, p.content_hash, r.created_at,"
        " (SELECT COUNT(*) FROM ranking r2 WHERE r2.prompt_id = r.prompt_id AND r2.created_at = r.created_at AND r2.id < r.id)"
        " FROM ranking r JOIN prompt p ON p.id = r.prompt_id"
        " WHERE r.id IN (SELECT retest_of FROM ranking WHERE retest_of IS NOT NULL)"
    ),
}

_COMPARISON_FIELDS = (
    "left_side", "verdict", "strength", "criteria", "note", "time_spent_ms", "guideline_version", "judged_at",
    "retracted_at",
)


class ExchangeStore(ProjectFile):
    # ------------------------------------------------------------------ export
    def exchange_counts(self) -> dict[str, int]:
        """Rows per record type of the exchange."""
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for t, table in EXCHANGE_TABLES.items()}

    def exchange_rows(self, record_type: str) -> sqlite3.Cursor:
        """Cursor over the rows of one record type, in the column order :mod:`workbench.exchange` unpacks."""
        return self.conn.execute(_EXPORT_SQL[record_type])

    def retest_targets(self, table: str) -> sqlite3.Cursor:
        """Cursor over the comparisons or rankings that retests point at: (id, what their key is made of..., rank
        among equals)."""
        return self.conn.execute(_RETEST_TARGET_SQL[table])

    # ------------------------------------------------------------------ import: look-ups
    def max_row_ids(self) -> dict[str, int]:
        """The highest id of the comparison, ranking and safety_flag tables (0 when empty): the rows a project had
        before an import began."""
        return {
            t: self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {t}").fetchone()[0]
            for t in ("comparison", "ranking", "safety_flag")
        }

    def guideline_with_text(self, text: str) -> tuple[int, str] | None:
        """(version, created_at) of the first guideline version with exactly this text."""
        row = self.conn.execute(
            "SELECT version, created_at FROM guideline WHERE text = ? ORDER BY version LIMIT 1", (text,)).fetchone()
        return (row[0], row[1]) if row else None

    def category_label(self, key: str) -> tuple[str, str] | None:
        """(label, description) of a flag category, or None when the taxonomy has no such key."""
        row = self.conn.execute("SELECT label, description FROM flag_category WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def prompt_by_hash(self, content_hash: str) -> tuple[int, str] | None:
        """(id, split) of the prompt with this content hash."""
        row = self.conn.execute("SELECT id, split FROM prompt WHERE content_hash = ?", (content_hash,)).fetchone()
        return (row[0], row[1]) if row else None

    def response_by_hash(self, prompt_id: int, content_hash: str) -> int | None:
        row = self.conn.execute(
            "SELECT id FROM response WHERE prompt_id = ? AND content_hash = ?", (prompt_id, content_hash)).fetchone()
        return row[0] if row else None

    def comparisons_created_at(self, response_a: int, response_b: int, created_at: str) -> list[tuple[int, str | None]]:
        """(id, verdict) of the comparisons of this pair (in this orientation) made at ``created_at``, in id order."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT id, verdict FROM comparison WHERE response_a = ? AND response_b = ? AND created_at = ? ORDER BY id",
            (response_a, response_b, created_at),
        )]

    def live_comparisons_of_pair(self, response_1: int, response_2: int, *, max_id: int) -> list[tuple[Any, ...]]:
        """(id, response_a, verdict, strength, source) of the unretracted comparisons of these two responses
        (either orientation) with id <= ``max_id``, in id order."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT id, response_a, verdict, strength, source FROM comparison WHERE retracted_at IS NULL AND id <= ?"
            " AND ((response_a = ? AND response_b = ?) OR (response_a = ? AND response_b = ?)) ORDER BY id",
            (max_id, response_1, response_2, response_2, response_1),
        )]

    def rankings_created_at(self, prompt_id: int, created_at: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM ranking WHERE prompt_id = ? AND created_at = ? ORDER BY id", (prompt_id, created_at))]

    def live_rankings_of_source(self, prompt_id: int, source: str, *, max_id: int) -> list[int]:
        """Unretracted rankings of a prompt from ``source`` with id <= ``max_id``."""
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM ranking WHERE prompt_id = ? AND retracted_at IS NULL AND source = ? AND id <= ?",
            (prompt_id, source, max_id),
        )]

    def has_demonstration(self, response_id: int) -> bool:
        return self.conn.execute("SELECT 1 FROM demonstration WHERE response_id = ?", (response_id,)).fetchone() is not None

    def flags_created_at(self, prompt_id: int, response_id: int | None, category: str, created_at: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM safety_flag WHERE prompt_id = ? AND response_id IS ? AND category = ? AND created_at = ? ORDER BY id",
            (prompt_id, response_id, category, created_at),
        )]

    def has_live_flag(
        self, prompt_id: int, response_id: int | None, category: str, present: bool, severity: str | None, *, max_id: int
    ) -> bool:
        """Whether an unretracted label with the same target, category, presence and severity (id <= ``max_id``)
        exists."""
        return self.conn.execute(
            "SELECT 1 FROM safety_flag WHERE prompt_id = ? AND response_id IS ? AND category = ? AND present = ?"
            " AND severity IS ? AND retracted_at IS NULL AND id <= ? LIMIT 1",
            (prompt_id, response_id, category, int(present), severity, max_id),
        ).fetchone() is not None

    # ------------------------------------------------------------------ import: rows as the file has them
    def insert_guideline_version(self, text: str, created_at: str) -> int:
        """Append a guideline version after the newest; returns its number."""
        version = self.conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM guideline").fetchone()[0]
        self.conn.execute("INSERT INTO guideline VALUES (?, ?, ?)", (version, text, created_at))
        return int(version)

    def set_guideline_created_at(self, version: int, created_at: str) -> None:
        self.conn.execute("UPDATE guideline SET created_at = ? WHERE version = ?", (created_at, version))

    def insert_category(self, key: str, label: str, description: str, builtin: bool) -> None:
        self.conn.execute(
            "INSERT INTO flag_category (key, label, description, builtin) VALUES (?, ?, ?, ?)",
            (key, label, description, int(builtin)),
        )

    def insert_prompt(self, messages_json: str, title: str, source: str, split: str, content_hash: str, created_at: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO prompt (messages, title, source, split, content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (messages_json, title, source, split, content_hash, created_at),
        )
        return int(cur.lastrowid)

    def hold_out_prompt(self, prompt_id: int) -> None:
        self.conn.execute("UPDATE prompt SET split = 'heldout' WHERE id = ?", (prompt_id,))

    def tag_prompt(self, prompt_id: int, tags: Iterable[str]) -> int:
        """Add tags to a prompt; returns how many were new."""
        cur = self.conn.executemany("INSERT OR IGNORE INTO prompt_tag VALUES (?, ?)", [(prompt_id, t) for t in tags])
        return max(cur.rowcount, 0)

    def insert_response(
        self, prompt_id: int, content: str, origin: str, source: str, model: str | None, adapter: str | None,
        sampling_json: str | None, seed: int | None, content_hash: str, created_at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO response (prompt_id, content, origin, source, model, adapter, sampling, seed, content_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (prompt_id, content, origin, source, model, adapter, sampling_json, seed, content_hash, created_at),
        )
        return int(cur.lastrowid)

    def insert_comparison(
        self, prompt_id: int, response_a: int, response_b: int, fields: Mapping[str, Any], *, source: str, kind: str,
        created_at: str,
    ) -> int:
        """A comparison with every judgment field as given (``fields``: left_side, verdict, strength, criteria as
        JSON, note, time_spent_ms, guideline_version, judged_at, retracted_at)."""
        values = [fields.get(k) for k in _COMPARISON_FIELDS]
        cur = self.conn.execute(
            f"INSERT INTO comparison (prompt_id, response_a, response_b, {', '.join(_COMPARISON_FIELDS)}, source, kind,"
            f" created_at) VALUES ({', '.join('?' * (len(_COMPARISON_FIELDS) + 6))})",
            (prompt_id, response_a, response_b, *values, source, kind, created_at),
        )
        return int(cur.lastrowid)

    def fill_comparison(self, comparison_id: int, fields: Mapping[str, Any]) -> None:
        """Set a comparison's judgment fields as given (a pending row taking an imported judgment)."""
        unknown = set(fields) - set(_COMPARISON_FIELDS)
        if unknown:
            raise ValueError(f"not judgment fields: {sorted(unknown)}")
        self.conn.execute(
            f"UPDATE comparison SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?", [*fields.values(), comparison_id]
        )

    def insert_ranking(
        self, prompt_id: int, ranks: Mapping[int, int], *, note: str | None, time_spent_ms: int | None,
        guideline_version: int | None, source: str, judged_at: str | None, retracted_at: str | None, created_at: str,
    ) -> int:
        cur = self.conn.execute(
            "INSERT INTO ranking (prompt_id, note, time_spent_ms, guideline_version, source, judged_at, retracted_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (prompt_id, note, time_spent_ms, guideline_version, source, judged_at, retracted_at, created_at),
        )
        rk = int(cur.lastrowid)
        self.conn.executemany("INSERT INTO ranking_entry VALUES (?, ?, ?)", [(rk, r, n) for r, n in ranks.items()])
        return rk

    def insert_demonstration(
        self, prompt_id: int, response_id: int, edited_from: int | None, *, note: str | None,
        time_spent_ms: int | None, guideline_version: int | None, source: str, retracted_at: str | None,
        created_at: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO demonstration (prompt_id, response_id, edited_from, note, time_spent_ms, guideline_version, source,"
            " retracted_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (prompt_id, response_id, edited_from, note, time_spent_ms, guideline_version, source, retracted_at, created_at),
        )

    def insert_flag(
        self, prompt_id: int, response_id: int | None, category: str, present: bool, severity: str | None, *,
        note: str | None, source: str, guideline_version: int | None, retracted_at: str | None, created_at: str,
    ) -> None:
        self.conn.execute(
            "INSERT INTO safety_flag (prompt_id, response_id, category, present, severity, note, source, guideline_version,"
            " retracted_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (prompt_id, response_id, category, int(present), severity, note, source, guideline_version, retracted_at,
             created_at),
        )

    def link_retest(self, table: str, row_id: int, original_id: int) -> None:
        """Point a comparison or ranking at the row it repeats."""
        if table not in _RETEST_TABLES:
            raise ValueError(f"no retests of {table}")
        self.conn.execute(f"UPDATE {table} SET retest_of = ? WHERE id = ?", (original_id, row_id))
