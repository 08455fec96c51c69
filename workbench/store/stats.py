"""Counts and aggregates: the trigger-kept counters behind the status bar and ``workbench stats`` (constant time on a
million comparisons), the Dashboard's aggregates of the expert's own work, and what a new training snapshot would
hold."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..taxonomy import STRENGTHS, VERDICTS
from .connection import ProjectFile

# A live judgment: judged and not retracted.
_LIVE = "verdict IS NOT NULL AND retracted_at IS NULL"


class StatsStore(ProjectFile):
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

    # ------------------------------------------------------------------ the Dashboard
    def position_counts(self, since: str | None = None) -> tuple[int, int]:
        """(n, picked left): live A/B judgments whose shown side is known (judged at or after ``since``), and how
        many of them picked the response shown on the left."""
        sql = (f"SELECT COUNT(*), COALESCE(SUM(verdict = left_side), 0) FROM comparison WHERE {_LIVE}"
               " AND verdict IN ('a', 'b') AND left_side IS NOT NULL")
        args: list[str] = []
        if since:
            sql += " AND judged_at >= ?"
            args.append(since)
        n, left = self.conn.execute(sql, args).fetchone()
        return int(n), int(left)

    def retest_verdicts(self) -> list[tuple[str, str | None, str, str | None]]:
        """(original verdict, original strength, retest verdict, retest strength) of every live retest of one of the
        expert's own judgments (imported originals carry no guideline version), both judged."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT o.verdict, o.strength, r.verdict, r.strength FROM comparison r JOIN comparison o ON o.id = r.retest_of "
            "WHERE r.verdict IS NOT NULL AND r.retracted_at IS NULL AND o.verdict IS NOT NULL AND o.retracted_at IS NULL"
            " AND o.guideline_version IS NOT NULL"
        )]

    def judgments_by_hour(self, since: str) -> Counter[str]:
        """Live judgments (comparisons, rankings, demonstrations) made at or after ``since``, by hour
        (``YYYY-MM-DDTHH`` → count)."""
        counts: Counter[str] = Counter()
        for sql in (
            f"SELECT substr(judged_at, 1, 13), COUNT(*) FROM comparison WHERE {_LIVE} AND judged_at >= ? GROUP BY 1",
            "SELECT substr(judged_at, 1, 13), COUNT(*) FROM ranking WHERE retracted_at IS NULL AND judged_at >= ? GROUP BY 1",
            "SELECT substr(created_at, 1, 13), COUNT(*) FROM demonstration WHERE retracted_at IS NULL AND created_at >= ? GROUP BY 1",
        ):
            for hour, n in self.conn.execute(sql, (since,)):
                counts[hour] += n
        return counts

    def recent_times_spent_ms(self, limit: int = 1000) -> list[int]:
        """Time spent on each of the last ``limit`` live judgments that recorded one, newest first."""
        return [r[0] for r in self.conn.execute(
            f"SELECT time_spent_ms FROM comparison WHERE {_LIVE} AND time_spent_ms IS NOT NULL ORDER BY judged_at DESC LIMIT ?",
            (limit,),
        )]

    def judged_since(self, since: str) -> int:
        """How many comparisons were judged after ``since`` (an ISO timestamp)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM comparison WHERE judged_at > ?", (since,)).fetchone()[0])

    # ------------------------------------------------------------------ training data at a glance
    def live_label_counts(self, split: str = "train") -> dict[str, int]:
        """Live demonstrations and safety labels on prompts of ``split`` (what a new snapshot would take)."""
        q = lambda sql: int(self.conn.execute(sql, (split,)).fetchone()[0])  # noqa: E731
        return {
            "demonstrations": q("SELECT COUNT(*) FROM demonstration d JOIN prompt p ON p.id = d.prompt_id"
                                " WHERE d.retracted_at IS NULL AND p.split = ?"),
            "safety_labels": q("SELECT COUNT(*) FROM safety_flag f JOIN prompt p ON p.id = f.prompt_id"
                               " WHERE f.retracted_at IS NULL AND p.split = ?"),
        }
