"""The annotation queue the Compare page walks: pending comparisons in id order, filtered by source and tag,
with a share of already-judged items coming back later, blind, as retest rows linked to their original.

Qt-free. Each call is a couple of indexed queries, so it stays fast on a project of a million comparisons:
retest candidates are found by seeking a random point on the ``judged_at`` index, never by sorting at random.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from datetime import datetime

from .store import Comparison, Project

DEFAULT_RETEST_SHARE = 0.05


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
        # Whether the last call of next() added a retest row (a new pending item the counts must show).
        self.added_retest = False
        # Items served but left unjudged when an undo brought an earlier one back: served again first, newest last.
        self._again: list[int] = []

    def next(self) -> Comparison | None:
        """The next item: one put back by an undo, else a retest with probability ``retest_share`` (when one is
        due), else the next pending."""
        self.served += 1
        self.added_retest = False
        while self._again:
            cid = self._again.pop()
            c = self.project.comparisons_by_id([cid]).get(cid)
            if c is not None and c.verdict is None and c.retracted_at is None:
                return c
        if self.config.retest_share > 0 and self.rng.random() < self.config.retest_share:
            original = self._retest_candidate()
            if original is not None:
                cid = self.project.add_retest(original)
                self.added_retest = True
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

    def unskip(self, comparison_id: int) -> None:
        """Take a skip back (the item is judged now, not at the wrap-around)."""
        self.skipped.discard(comparison_id)

    def put_back(self, comparison_id: int) -> None:
        """An undo shows an earlier item in place of this one: serve this one again next, so it is not passed over."""
        self._again.append(comparison_id)

    def judged(self, comparison_id: int) -> None:
        self.recent.append(comparison_id)
        del self.recent[: -self.config.min_gap]

    def _retest_candidate(self) -> int | None:
        """One of the expert's own judgments (made in this app: it has a guideline version; imported judgments have
        none), non-retracted and without a retest yet, picked at a random point in judging time."""
        span = self.project.own_judgment_time_range()
        if span is None:
            return None
        lo, hi = span
        t0, t1 = datetime.fromisoformat(lo).timestamp(), datetime.fromisoformat(hi).timestamp()
        recent = set(self.recent)
        for _ in range(8):
            t = self.rng.uniform(t0, t1)
            start = datetime.fromtimestamp(t, tz=datetime.fromisoformat(lo).tzinfo).isoformat(timespec="milliseconds")
            for cid in self.project.retest_candidates(start, source=self.config.source, tag=self.config.tag, limit=16):
                if cid in recent or self.project.has_retest(cid):
                    continue
                return int(cid)
        return None


def sources(project: Project) -> list[str]:
    """Sources that have pending comparisons (for the queue's filter)."""
    return project.comparison_sources()


def tags(project: Project) -> list[str]:
    return project.tags()


def next_rank_prompt(project: Project, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset(), min_responses: int = 3) -> int | None:
    """The next prompt (id > ``after_id``) with at least ``min_responses`` responses and no live ranking yet."""
    return project.next_rank_prompt(after_id, exclude=exclude, min_responses=min_responses)


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
        return self.project.lacks_good_answer(prompt_id)

    def next(self, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
        if self._both_bad is None:
            self._both_bad = self.project.both_bad_prompt_ids()
        for pid in self._both_bad[bisect.bisect_right(self._both_bad, after_id):]:
            if pid not in exclude and self.lacks_good_answer(pid):
                return pid
        return self.project.next_prompt_lacking_good_answer(after_id, exclude=exclude)


def next_write_prompt(project: Project, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
    """One-off form of :meth:`WriteQueue.next`."""
    return WriteQueue(project).next(after_id, exclude=exclude)
