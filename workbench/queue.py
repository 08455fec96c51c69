"""The annotation queue the Compare page walks: pending comparisons in id order, filtered by source and tag,
with a share of already-judged items coming back later, blind, as retest rows linked to their original.

Qt-free. Each call is a couple of indexed queries, so it stays fast on a project of a million comparisons:
retest candidates are found by seeking a random point on the ``judged_at`` index, never by sorting at random.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

from .store import Comparison, Project

DEFAULT_RETEST_SHARE = 0.05
# A live judgment the expert made in this app: imported judgments carry no guideline version (see
# importers.staging), and retesting them would measure someone else's consistency, not the expert's.
_OWN = "verdict IS NOT NULL AND retracted_at IS NULL AND guideline_version IS NOT NULL"


@dataclass
class QueueConfig:
    source: str | None = field(default=None, metadata={"help": "only comparisons from this source"})
    tag: str | None = field(default=None, metadata={"help": "only prompts carrying this tag"})
    retest_share: float = field(
        default=DEFAULT_RETEST_SHARE,
        metadata={"help": "share of items served that are blind repeats of earlier judgments (0 turns retests off)"},
    )
    min_gap: int = field(
        default=20, metadata={"help": "a judgment made in this session comes back only after this many other items"}
    )


class AnnotationQueue:
    """Serves the next item to judge. ``skip`` puts the current one aside until the queue wraps around."""

    def __init__(self, project: Project, config: QueueConfig | None = None, *, seed: int | None = None):
        self.project = project
        self.config = config or QueueConfig()
        self.rng = random.Random(seed)
        self.cursor = 0
        self.skipped: set[int] = set()
        self.served = 0
        # Ids judged in this session, in order, so a fresh judgment does not come straight back as a retest.
        self.recent: list[int] = []

    def next(self) -> Comparison | None:
        """The next item: a retest with probability ``retest_share`` (when one is due), else the next pending."""
        self.served += 1
        if self.config.retest_share > 0 and self.rng.random() < self.config.retest_share:
            original = self._retest_candidate()
            if original is not None:
                cid = self.project.add_retest(original)
                return self.project.get_comparison(cid)
        c = self._next_pending(self.cursor, exclude=())
        if c is None and (self.cursor or self.skipped):
            # Wrap around: first what was never shown after the cursor, then the skipped ones again.
            c = self._next_pending(0, exclude=self.skipped) or self._next_pending(0, exclude=())
            self.skipped.clear()
        if c is not None:
            self.cursor = c.id
        return c

    def _next_pending(self, after: int, exclude) -> Comparison | None:
        return self.project.next_pending(after, source=self.config.source, tag=self.config.tag, exclude=exclude)

    def skip(self, comparison_id: int) -> None:
        self.skipped.add(comparison_id)

    def judged(self, comparison_id: int) -> None:
        self.recent.append(comparison_id)
        del self.recent[: -self.config.min_gap]

    def _retest_candidate(self) -> int | None:
        """One of the expert's own judgments (made in this app: it has a guideline version; imported judgments have
        none), non-retracted and without a retest yet, picked at a random point in judging time."""
        conn = self.project.conn
        # Two statements: SQLite answers a lone MIN or MAX from the index, but MIN and MAX together by a scan.
        lo = conn.execute(f"SELECT MIN(judged_at) FROM comparison WHERE {_OWN}").fetchone()[0]
        hi = conn.execute(f"SELECT MAX(judged_at) FROM comparison WHERE {_OWN}").fetchone()[0]
        if lo is None:
            return None
        from datetime import datetime

        t0, t1 = datetime.fromisoformat(lo).timestamp(), datetime.fromisoformat(hi).timestamp()
        recent = set(self.recent)
        for _ in range(8):
            t = self.rng.uniform(t0, t1)
            start = datetime.fromtimestamp(t, tz=datetime.fromisoformat(lo).tzinfo).isoformat(timespec="milliseconds")
            args: list = [start]
            sql = (
                "SELECT c.id FROM comparison c WHERE c.verdict IS NOT NULL AND c.judged_at >= ? "
                "AND c.retest_of IS NULL AND c.retracted_at IS NULL AND c.guideline_version IS NOT NULL"
            )
            if self.config.source:
                sql += " AND c.source = ?"
                args.append(self.config.source)
            if self.config.tag:
                sql += " AND EXISTS (SELECT 1 FROM prompt_tag t WHERE t.prompt_id = c.prompt_id AND t.tag = ?)"
                args.append(self.config.tag)
            for (cid,) in conn.execute(sql + " ORDER BY c.judged_at LIMIT 16", args):
                if cid in recent:
                    continue
                if conn.execute("SELECT 1 FROM comparison WHERE retest_of = ? LIMIT 1", (cid,)).fetchone():
                    continue
                return int(cid)
        return None


def sources(project: Project) -> list[str]:
    """Sources that have pending comparisons (for the queue's filter)."""
    return [r[0] for r in project.conn.execute("SELECT DISTINCT source FROM comparison WHERE source != '' ORDER BY source")]


def tags(project: Project) -> list[str]:
    return [r[0] for r in project.conn.execute("SELECT DISTINCT tag FROM prompt_tag ORDER BY tag")]


def next_rank_prompt(project: Project, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset(), min_responses: int = 3) -> int | None:
    """The next prompt (id > ``after_id``) with at least ``min_responses`` responses and no live ranking yet."""
    skip = sorted(exclude)
    sql = (
        "SELECT p.id FROM prompt p WHERE p.id > ? "
        "AND (SELECT COUNT(*) FROM response r WHERE r.prompt_id = p.id) >= ? "
        "AND NOT EXISTS (SELECT 1 FROM ranking k WHERE k.prompt_id = p.id AND k.retracted_at IS NULL)"
    )
    if skip:
        sql += f" AND p.id NOT IN ({','.join('?' * len(skip))})"
    row = project.conn.execute(sql + " ORDER BY p.id LIMIT 1", [after_id, min_responses, *skip]).fetchone()
    return int(row[0]) if row else None


_LACKS_GOOD_ANSWER = (
    "NOT EXISTS (SELECT 1 FROM demonstration d WHERE d.prompt_id = p.id AND d.retracted_at IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM comparison w WHERE w.prompt_id = p.id AND w.verdict IN ('a', 'b') AND w.retracted_at IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM ranking k WHERE k.prompt_id = p.id AND k.retracted_at IS NULL)"
)


class WriteQueue:
    """Prompts lacking a good answer, for the Write page: no live demonstration and no response that won a
    comparison or was ranked. Prompts whose pairs were judged "both bad" come first.

    The "both bad" prompts are listed once (one pass over the comparisons) and then checked one by one, so each
    save costs a few indexed lookups rather than a scan of every prompt after the cursor.
    """

    def __init__(self, project: Project):
        self.project = project
        self._both_bad: list[int] | None = None

    def lacks_good_answer(self, prompt_id: int) -> bool:
        return self.project.conn.execute(f"SELECT 1 FROM prompt p WHERE p.id = ? AND {_LACKS_GOOD_ANSWER}", (prompt_id,)).fetchone() is not None

    def next(self, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
        if self._both_bad is None:
            self._both_bad = [
                r[0] for r in self.project.conn.execute(
                    "SELECT DISTINCT prompt_id FROM comparison WHERE verdict = 'both_bad' AND retracted_at IS NULL ORDER BY prompt_id"
                )
            ]
        for pid in self._both_bad[bisect.bisect_right(self._both_bad, after_id):]:
            if pid not in exclude and self.lacks_good_answer(pid):
                return pid
        skip = sorted(exclude)
        not_skipped = f" AND p.id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        row = self.project.conn.execute(
            f"SELECT p.id FROM prompt p WHERE p.id > ? AND {_LACKS_GOOD_ANSWER}{not_skipped} ORDER BY p.id LIMIT 1", [after_id, *skip]
        ).fetchone()
        return int(row[0]) if row else None


def next_write_prompt(project: Project, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
    """One-off form of :meth:`WriteQueue.next`."""
    return WriteQueue(project).next(after_id, exclude=exclude)
