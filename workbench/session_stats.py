"""Statistics of the expert's own work for the Dashboard: pace, verdict mix, left/right position bias with an
exact binomial test, and test–retest agreement. Qt-free; each reads one or two aggregates of the store.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .store import Project


def binomial_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability, under Binomial(n, p), of an outcome no more likely than k
    (the definition R's binom.test and scipy.stats.binomtest use). Computed in log space, so n may be large."""
    if n == 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..{n}")
    if p in (0.0, 1.0):
        return 1.0 if k == round(p * n) else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lgn = math.lgamma(n + 1)

    def logpmf(i: int) -> float:
        return lgn - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq

    target = logpmf(k) + 1e-7 * abs(logpmf(k)) + 1e-12  # relative tolerance, as the reference implementations use
    mode = int((n + 1) * p)
    total = 0.0
    # The pmf is unimodal: walk outwards from each end towards the mode while terms stay <= target.
    for rng in (range(0, mode + 1), range(n, mode, -1)):
        for i in rng:
            lv = logpmf(i)
            if lv > target:
                break
            total += math.exp(lv)
    return min(1.0, total)


@dataclass
class PositionBias:
    n: int             # judgments for A or B whose shown side is known
    left_picks: int    # of those, how many picked the response shown on the left
    share_left: float
    p_value: float     # exact two-sided binomial test against 0.5


def position_bias(project: Project, since: str | None = None) -> PositionBias:
    n, left = project.position_counts(since)
    return PositionBias(n, left, left / n if n else float("nan"), binomial_two_sided(left, n))


@dataclass
class RetestAgreement:
    pairs: int          # original and retest both judged
    agree: int          # same verdict (a, b, tie, both bad)
    exact: int          # same verdict and same strength
    kappa: float        # Cohen's kappa on the verdict (nan when undefined)

    @property
    def rate(self) -> float:
        return self.agree / self.pairs if self.pairs else float("nan")


def retest_agreement(project: Project) -> RetestAgreement:
    rows = project.retest_verdicts()
    n = len(rows)
    agree = sum(1 for ov, _, rv, _ in rows if ov == rv)
    exact = sum(1 for ov, os_, rv, rs in rows if ov == rv and os_ == rs)
    kappa = float("nan")
    if n:
        first, second = Counter(r[0] for r in rows), Counter(r[2] for r in rows)
        pe = sum(first[v] * second[v] for v in first) / (n * n)
        po = agree / n
        if pe < 1:
            kappa = (po - pe) / (1 - pe)
    return RetestAgreement(n, agree, exact, kappa)


def judgments_per_hour(project: Project, hours: int = 24, now: datetime | None = None) -> list[tuple[str, int]]:
    """Judgments (comparisons, rankings, demonstrations) in each of the last ``hours`` hours, oldest first."""
    now = now or datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    counts = project.judgments_by_hour(start.isoformat(timespec="milliseconds"))
    out = []
    for i in range(hours):
        h = (start + timedelta(hours=i)).isoformat()[:13]
        out.append((h, counts.get(h, 0)))
    return out


def session_rate(judgments: int, elapsed_seconds: float) -> float:
    """Judgments per hour over a session (0 before the first minute, to avoid silly rates)."""
    return judgments * 3600 / elapsed_seconds if elapsed_seconds >= 60 else 0.0


def time_spent_median_ms(project: Project, limit: int = 1000) -> float | None:
    """Median time spent on the last ``limit`` judgments."""
    vals = sorted(project.recent_times_spent_ms(limit))
    if not vals:
        return None
    m = len(vals) // 2
    return float(vals[m]) if len(vals) % 2 else (vals[m - 1] + vals[m]) / 2
