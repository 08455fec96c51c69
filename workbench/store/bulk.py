"""Bulk reads and writes for imports and synthetic benchmark projects: look-ups of many rows at once (chunked
``IN (…)`` queries) and ``executemany`` inserts with explicit ids, in the caller's transaction.

The one-row operations of the other areas validate and look up per call; an import of 8.5k pairs or a synthetic
project of a million comparisons cannot afford that, so :mod:`workbench.importers.staging` checks and de-duplicates
before it calls these, and these only write. Each insert documents the tuple it takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .connection import ProjectFile

_CHUNK = 500  # bound parameters per IN (…) query, well under SQLite's limit
_ID_TABLES = ("prompt", "response", "comparison", "demonstration", "safety_flag")


class BulkStore(ProjectFile):
    def _lookup(self, sql: str, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run ``sql`` (with one ``{}`` for the placeholders) over ``keys`` in chunks; all rows."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            rows.extend(self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
        return rows

    def next_row_id(self, table: str) -> int:
        """The id the next row of ``table`` would get (one past the highest)."""
        if table not in _ID_TABLES:
            raise ValueError(f"no bulk ids for {table}")
        return int(self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]) + 1

    # ------------------------------------------------------------------ look-ups
    def prompt_ids_by_hash(self, hashes: Sequence[str]) -> dict[str, int]:
        """Content hash → id of the prompts among ``hashes`` already in the project."""
        return dict(self._lookup("SELECT content_hash, id FROM prompt WHERE content_hash IN ({})", hashes))

    def response_ids_of_prompts(self, prompt_ids: Sequence[int]) -> dict[tuple[int, str], int]:
        """(prompt id, content hash) → id of every response of these prompts."""
        return {
            (pid, rh): rid
            for pid, rh, rid in self._lookup(
                "SELECT prompt_id, content_hash, id FROM response WHERE prompt_id IN ({})", prompt_ids)
        }

    def judged_pairs_of_prompts(self, prompt_ids: Sequence[int]) -> set[frozenset[int]]:
        """The response pairs with a live judgment on these prompts."""
        return {
            frozenset(pair)
            for pair in self._lookup(
                "SELECT response_a, response_b FROM comparison WHERE verdict IS NOT NULL AND retracted_at IS NULL"
                " AND prompt_id IN ({})", prompt_ids)
        }

    def pending_comparisons_of_prompts(self, prompt_ids: Sequence[int]) -> list[tuple[int, int, int, str, int | None]]:
        """(id, response_a, response_b, kind, retest_of) of the live pending comparisons on these prompts, in id
        order."""
        return self._lookup(
            "SELECT id, response_a, response_b, kind, retest_of FROM comparison WHERE verdict IS NULL"
            " AND retracted_at IS NULL AND prompt_id IN ({}) ORDER BY id", prompt_ids)

    def demonstrated_responses(self, response_ids: Sequence[int]) -> set[int]:
        """Which of these responses already are a demonstration."""
        return {r for (r,) in self._lookup("SELECT response_id FROM demonstration WHERE response_id IN ({})", response_ids)}

    def live_flag_keys_of_prompts(self, prompt_ids: Sequence[int]) -> set[tuple[Any, ...]]:
        """(prompt id, response id, category, present, severity, source) of the live labels on these prompts."""
        return set(self._lookup(
            "SELECT prompt_id, response_id, category, present, severity, source FROM safety_flag"
            " WHERE retracted_at IS NULL AND prompt_id IN ({})", prompt_ids))

    # ------------------------------------------------------------------ inserts
    def insert_prompts(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (id, messages JSON, title, source, split, content hash, created_at)."""
        self.conn.executemany(
            "INSERT INTO prompt (id, messages, title, source, split, content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def insert_prompt_tags(self, rows: Iterable[tuple[int, str]]) -> None:
        """Rows of (prompt id, tag); tags a prompt already has are kept once."""
        self.conn.executemany("INSERT OR IGNORE INTO prompt_tag (prompt_id, tag) VALUES (?, ?)", rows)

    def insert_responses(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (id, prompt id, content, origin, source, model, content hash, created_at)."""
        self.conn.executemany(
            "INSERT INTO response (id, prompt_id, content, origin, source, model, content_hash, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def insert_judged_comparisons(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (prompt id, response_a, response_b, verdict, strength, note, judged_at, source, created_at): imported
        judgments (no shown side, no guideline version: they were not made under this project's guideline)."""
        self.conn.executemany(
            "INSERT INTO comparison (prompt_id, response_a, response_b, verdict, strength, note, judged_at, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def judge_pending_imported(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (verdict, strength, note or None, judged_at, comparison id): pending comparisons take an imported
        judgment (their note kept when the import has none; no guideline version)."""
        self.conn.executemany(
            "UPDATE comparison SET verdict = ?, strength = ?, note = COALESCE(?, note), judged_at = ?,"
            " guideline_version = NULL WHERE id = ?",
            rows,
        )

    def insert_demonstrations(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (prompt id, response id, note, source, created_at)."""
        self.conn.executemany(
            "INSERT INTO demonstration (prompt_id, response_id, note, source, created_at) VALUES (?, ?, ?, ?, ?)", rows
        )

    def insert_flags(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (prompt id, response id or None, category, present 0/1, severity, note, source, created_at)."""
        self.conn.executemany(
            "INSERT INTO safety_flag (prompt_id, response_id, category, present, severity, note, source, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def insert_synthetic_comparisons(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of (id, prompt id, response_a, response_b, left_side, verdict, strength, guideline_version,
        judged_at, source, created_at): every field of a comparison at once, for synthetic benchmark projects."""
        self.conn.executemany(
            "INSERT INTO comparison (id, prompt_id, response_a, response_b, left_side, verdict, strength, guideline_version,"
            " judged_at, source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
