"""Rankings: k responses to one prompt in the expert's order (ties allowed), and the Rank page's queue of prompts
with enough responses and no live ranking yet."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import WorkbenchError
from .connection import ProjectFile
from .records import now_iso


class RankingStore(ProjectFile):
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

    def ranking_ids(self, prompt_id: int | None = None) -> list[int]:
        """Every ranking (of one prompt, when given), retracted ones included, in id order."""
        if prompt_id is None:
            return [r[0] for r in self.conn.execute("SELECT id FROM ranking ORDER BY id")]
        return [r[0] for r in self.conn.execute("SELECT id FROM ranking WHERE prompt_id = ? ORDER BY id", (prompt_id,))]

    def ranking_retest_of(self, ranking_id: int) -> int | None:
        """The ranking this one repeats blind, or None for an original."""
        row = self.conn.execute("SELECT retest_of FROM ranking WHERE id = ?", (ranking_id,)).fetchone()
        if row is None:
            raise WorkbenchError(f"no ranking with id {ranking_id}")
        return row[0]

    def ranking_prompt_id(self, ranking_id: int) -> int:
        row = self.conn.execute("SELECT prompt_id FROM ranking WHERE id = ?", (ranking_id,)).fetchone()
        if row is None:
            raise WorkbenchError(f"no ranking with id {ranking_id}")
        return int(row[0])

    def next_rank_prompt(
        self, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset(), min_responses: int = 3
    ) -> int | None:
        """The next prompt (id > ``after_id``) with at least ``min_responses`` responses and no live ranking yet."""
        skip = sorted(exclude)
        sql = (
            "SELECT p.id FROM prompt p WHERE p.id > ? "
            "AND (SELECT COUNT(*) FROM response r WHERE r.prompt_id = p.id) >= ? "
            "AND NOT EXISTS (SELECT 1 FROM ranking k WHERE k.prompt_id = p.id AND k.retracted_at IS NULL)"
        )
        if skip:
            sql += f" AND p.id NOT IN ({','.join('?' * len(skip))})"
        row = self.conn.execute(sql + " ORDER BY p.id LIMIT 1", [after_id, min_responses, *skip]).fetchone()
        return int(row[0]) if row else None
