"""The rows training data is made of: what :mod:`workbench.training_data` classifies when it selects judgments for a
snapshot, and the joined rows it reads back out of a snapshot to build examples (the export's hot path: one
statement per kind of item, streamed).

The rules (which rows count, what a row becomes) live in :mod:`workbench.training_data`; here are only the
queries. ``split`` arguments name the prompt split to keep (``train`` or ``heldout``); None keeps both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .connection import ProjectFile

_SNAP_COMPARISON_PROMPTS = (
    "SELECT c.prompt_id FROM snapshot_item s JOIN comparison c ON c.id = s.item_id "
    "WHERE s.snapshot_id = ?1 AND s.item_type = 'comparison'"
)
_SNAP_RANKING_PROMPTS = (
    "SELECT r.prompt_id FROM snapshot_item s JOIN ranking r ON r.id = s.item_id "
    "WHERE s.snapshot_id = ?1 AND s.item_type = 'ranking'"
)
_SNAP_DEMONSTRATION_PROMPTS = (
    "SELECT d.prompt_id FROM snapshot_item s JOIN demonstration d ON d.id = s.item_id "
    "WHERE s.snapshot_id = ?1 AND s.item_type = 'demonstration'"
)
_SNAP_PROMPT_ITEMS = "SELECT s.item_id FROM snapshot_item s WHERE s.snapshot_id = ?1 AND s.item_type = 'prompt'"


def _split_join(alias: str, split: str | None) -> tuple[str, list[Any]]:
    """A JOIN restricting rows (whose prompt id column is ``alias.prompt_id``) to prompts of ``split``."""
    if split is None:
        return "", []
    return f" JOIN prompt sp ON sp.id = {alias}.prompt_id AND sp.split = ?", [split]


class TrainingRowStore(ProjectFile):
    # ------------------------------------------------------------------ selection
    def judged_comparison_facts(self) -> sqlite3.Cursor:
        """Cursor over every judged comparison: (id, verdict, retracted, retest, kind, prompt split)."""
        return self.conn.execute(
            "SELECT c.id, c.verdict, c.retracted_at IS NOT NULL, c.retest_of IS NOT NULL, c.kind, p.split"
            " FROM comparison c JOIN prompt p ON p.id = c.prompt_id WHERE c.verdict IS NOT NULL"
        )

    def unjudged_count(self) -> int:
        """Comparisons without a verdict (retracted pending copies included)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM comparison WHERE verdict IS NULL").fetchone()[0])

    def ranking_facts(self) -> sqlite3.Cursor:
        """Cursor over every ranking in id order: (id, retracted, retest, prompt split)."""
        return self.conn.execute(
            "SELECT r.id, r.retracted_at IS NOT NULL, r.retest_of IS NOT NULL, p.split FROM ranking r"
            " JOIN prompt p ON p.id = r.prompt_id ORDER BY r.id"
        )

    def live_demonstration_ids(self, split: str | None = "train") -> list[int]:
        """Unretracted demonstrations on prompts of ``split``, in id order."""
        clause, args = _split_join("d", split)
        return [r[0] for r in self.conn.execute(
            "SELECT d.id FROM demonstration d" + clause + " WHERE d.retracted_at IS NULL ORDER BY d.id", args)]

    def live_flag_ids(self, split: str | None = "train") -> list[int]:
        """Unretracted safety labels (present and known absent) on prompts of ``split``, in id order."""
        clause, args = _split_join("f", split)
        return [r[0] for r in self.conn.execute(
            "SELECT f.id FROM safety_flag f" + clause + " WHERE f.retracted_at IS NULL ORDER BY f.id", args)]

    def winner_comparison_ids(self, strengths: Sequence[str], *, include_eval: bool, split: str | None) -> list[int]:
        """One comparison (the earliest) per response that won a judgment of the given strengths, never lost one
        among the live, non-retest judgments (eval items only with ``include_eval``), and carries no present safety
        flag; in id order."""
        if not strengths:
            return []
        base = "c.retracted_at IS NULL AND c.retest_of IS NULL" + ("" if include_eval else " AND c.kind = 'train'")
        clause, extra = _split_join("c", split)
        sql = f"""
            WITH wins AS (
                SELECT c.id AS cid, CASE c.verdict WHEN 'a' THEN c.response_a ELSE c.response_b END AS rid
                FROM comparison c{clause}
                WHERE c.verdict IN ('a', 'b') AND c.strength IN ({','.join('?' * len(strengths))}) AND {base}
            ),
            losers AS (
                SELECT CASE c.verdict WHEN 'a' THEN c.response_b ELSE c.response_a END AS rid
                FROM comparison c WHERE c.verdict IN ('a', 'b') AND {base}
            )
            SELECT MIN(w.cid) FROM wins w
            WHERE w.rid NOT IN (SELECT rid FROM losers)
              AND w.rid NOT IN (SELECT response_id FROM safety_flag
                                WHERE present = 1 AND retracted_at IS NULL AND response_id IS NOT NULL)
            GROUP BY w.rid ORDER BY 1
        """
        return [r[0] for r in self.conn.execute(sql, [*extra, *strengths])]

    # ------------------------------------------------------------------ reading a snapshot
    def snapshot_prompt_messages(self, snapshot_id: int, *, with_prompt_items: bool = False) -> dict[int, str]:
        """Prompt id → stored messages (canonical JSON) of every prompt the snapshot's comparisons, rankings and
        demonstrations refer to (and its ``prompt`` items, with ``with_prompt_items``), in one query."""
        parts = [_SNAP_COMPARISON_PROMPTS, _SNAP_RANKING_PROMPTS, _SNAP_DEMONSTRATION_PROMPTS]
        if with_prompt_items:
            parts.append(_SNAP_PROMPT_ITEMS)
        return dict(self.conn.execute(
            f"SELECT p.id, p.messages FROM prompt p WHERE p.id IN ({' UNION '.join(parts)})", (snapshot_id,)))

    def snapshot_comparison_rows(self, snapshot_id: int) -> sqlite3.Cursor:
        """Cursor over the snapshot's comparisons: (id, prompt_id, verdict, strength, response_a id, content A,
        response_b id, content B), in id order."""
        return self.conn.execute(
            "SELECT c.id, c.prompt_id, c.verdict, c.strength, c.response_a, ra.content, c.response_b, rb.content "
            "FROM snapshot_item s JOIN comparison c ON c.id = s.item_id "
            "JOIN response ra ON ra.id = c.response_a JOIN response rb ON rb.id = c.response_b "
            "WHERE s.snapshot_id = ? AND s.item_type = 'comparison' ORDER BY s.item_id",
            (snapshot_id,),
        )

    def snapshot_ranking_rows(self, snapshot_id: int) -> sqlite3.Cursor:
        """Cursor over the snapshot's ranking entries: (ranking id, prompt id, response id, rank, content), by
        ranking, best rank first."""
        return self.conn.execute(
            "SELECT r.id, r.prompt_id, e.response_id, e.rank, resp.content "
            "FROM snapshot_item s JOIN ranking r ON r.id = s.item_id "
            "JOIN ranking_entry e ON e.ranking_id = r.id JOIN response resp ON resp.id = e.response_id "
            "WHERE s.snapshot_id = ? AND s.item_type = 'ranking' ORDER BY r.id, e.rank, e.response_id",
            (snapshot_id,),
        )

    def snapshot_demonstration_rows(self, snapshot_id: int) -> sqlite3.Cursor:
        """Cursor over the snapshot's demonstrations: (id, prompt id, response id, content), in id order."""
        return self.conn.execute(
            "SELECT d.id, d.prompt_id, d.response_id, r.content FROM snapshot_item s JOIN demonstration d ON d.id = s.item_id "
            "JOIN response r ON r.id = d.response_id WHERE s.snapshot_id = ? AND s.item_type = 'demonstration' ORDER BY d.id",
            (snapshot_id,),
        )

    def snapshot_flag_rows(self, snapshot_id: int) -> sqlite3.Cursor:
        """Cursor over the snapshot's safety labels: (id, prompt id, response id or None, category, present,
        severity, prompt messages JSON, response content or None), in id order."""
        return self.conn.execute(
            "SELECT f.id, f.prompt_id, f.response_id, f.category, f.present, f.severity, p.messages, r.content "
            "FROM snapshot_item s JOIN safety_flag f ON f.id = s.item_id JOIN prompt p ON p.id = f.prompt_id "
            "LEFT JOIN response r ON r.id = f.response_id WHERE s.snapshot_id = ? AND s.item_type = 'flag' ORDER BY f.id",
            (snapshot_id,),
        )
