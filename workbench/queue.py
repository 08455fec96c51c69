"""The annotation queue the Compare page walks: pending comparisons in id order, filtered by source and tag,
with a share of already-judged items coming back later, blind, as retest rows linked to their original.

Two orders (the project's ``queue.order`` setting, :func:`set_queue_order`; the Overview page switches it):

- ``id``: the order the comparisons were added.
- ``closest``: most informative first (the model-in-the-loop order of active learning): pending pairs a reward model
  scored (the ``score`` job on pending comparisons stores each pair's reward gap, :mod:`workbench.reward_scores`)
  served smallest gap first, where the reward model is least sure which response is better; then the pairs no
  score run covers, in id order. The gaps of the newest score run that stored any are used.

Qt-free. Each call is a couple of indexed queries, so it stays fast on a project of a million comparisons: the
closest-first order is a seek on the (run, key, value) index of the metric table, retest candidates are found by
seeking a random point on the ``judged_at`` index, never by sorting at random.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from datetime import datetime

from .configs import ScoreConfig
from .errors import InputError
from .reward_scores import GAP_KEY, SCORE_STAGE, normal_path
from .store import Comparison, Project

DEFAULT_RETEST_SHARE = 0.05
QUEUE_ORDERS = {"id": "in the order added", "closest": "closest reward-model scores first"}
ORDER_SETTING = "queue.order"


def queue_order(project: Project) -> str:
    """The project's queue order (``id`` unless set)."""
    order = project.meta(ORDER_SETTING) or "id"
    return order if order in QUEUE_ORDERS else "id"


def set_queue_order(project: Project, order: str) -> None:
    if order not in QUEUE_ORDERS:
        raise InputError(f"unknown queue order {order!r}; one of {', '.join(QUEUE_ORDERS)}", field="order")
    project.set_meta(ORDER_SETTING, order)


def score_queue_config(project: Project, reward_model: str, limit: int = 200, **settings) -> ScoreConfig:
    """The ``score`` job that orders the queue: the reward model scores the next ``limit`` pending training pairs
    (both responses of each, and each pair's gap is stored)."""
    ids = project.pending_ids(kind="train", limit=limit)
    if not ids:
        raise InputError("no pending pairs to score: the queue is empty", field="comparison_ids")
    return ScoreConfig(reward_model=normal_path(reward_model), comparison_ids=ids,
                       name=f"queue order: {len(ids)} pending pair(s)", **settings)


def gap_run(project: Project) -> int | None:
    """The score run whose reward gaps order the queue (the newest that stored any), or None."""
    return project.newest_run_with_metric(SCORE_STAGE, GAP_KEY)


def scored_pending(project: Project) -> tuple[int, int]:
    """(pending pairs with a reward gap, pending training pairs): how much of the queue the closest-first order
    covers."""
    run_id = gap_run(project)
    scored = project.pending_with_metric_count(run_id, GAP_KEY) if run_id is not None else 0
    return scored, project.pending_count("train")


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
    order: str | None = field(
        default=None, metadata={"help": "id or closest (see the module docstring); none: the project's setting"}
    )


class AnnotationQueue:
    """Serves the next item to judge. ``skip`` puts the current one aside until the queue wraps around."""

    def __init__(self, project: Project, config: QueueConfig | None = None, *, seed: int | None = None):
        self.project = project
        self.config = config or QueueConfig()
        self.rng = random.Random(seed)
        self.cursor = 0
        # In the closest-first order: (gap, id) of the last pair served by gap, while scored pairs remain.
        self.gap_cursor: tuple[float, int] | None = None
        self.gaps_done = False
        self.gap_served: set[int] = set()  # served by gap: the id order after them leaves them out until it wraps
        self._order: str | None = None
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
        order = self.config.order or queue_order(self.project)
        if order != self._order:  # switched (or first call): start the new order from its beginning
            self._order, self.cursor, self.gap_cursor, self.gaps_done = order, 0, None, order != "closest"
            self.gap_served.clear()
        if not self.gaps_done:
            c = self._next_by_gap()
            if c is not None:
                return c
        c = self._next_pending(self.cursor, exclude=self.gap_served)
        if c is None and (self.cursor or self.skipped or self.gap_served):
            # Wrap around: first what was never shown after the cursor, then the skipped ones again.
            c = self._next_pending(0, exclude=self.skipped | self.gap_served) or self._next_pending(0, exclude=())
            self.skipped.clear()
            self.gap_served.clear()
        if c is not None:
            self.cursor = c.id
        return c

    def _next_by_gap(self) -> Comparison | None:
        """The pending scored pair with the next-smallest reward gap; None (and the id order from then on) once
        none is left."""
        run_id = gap_run(self.project)
        found = None
        if run_id is not None:
            found = self.project.next_pending_by_metric(run_id, GAP_KEY, self.gap_cursor, source=self.config.source,
                                                        tag=self.config.tag, exclude=self.skipped)
        if found is None:
            self.gaps_done = True
            return None
        self.gap_cursor = found
        self.gap_served.add(found[1])
        return self.project.get_comparison(found[1])

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
