"""Dashboard statistics on real project files: binomial test against published values, position bias,
test–retest agreement, judgments per hour."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from workbench.importers import import_file
from workbench.session_stats import (
    binomial_two_sided,
    judgments_per_hour,
    position_bias,
    retest_agreement,
    session_rate,
    time_spent_median_ms,
)


@pytest.mark.parametrize(
    "k, n, expected",
    [
        # Values of R's binom.test(k, n)$p.value
        (7, 10, 0.34375),
        (60, 100, 0.05688793),
        (0, 5, 0.0625),
        (3, 6, 1.0),
        (5200, 10000, 6.5935156e-05),  # exact: 2 * sum(comb(10000, i) for i >= 5200) / 2**10000
    ],
)
def test_binomial_matches_reference_values(k, n, expected):
    assert binomial_two_sided(k, n) == pytest.approx(expected, rel=2e-3)


def test_binomial_is_symmetric_and_handles_large_n():
    assert binomial_two_sided(30, 100) == pytest.approx(binomial_two_sided(70, 100))
    assert binomial_two_sided(500_000, 1_000_000) == pytest.approx(1.0)
    assert binomial_two_sided(0, 0) == 1.0


def _pairs(project, n):
    out = []
    for i in range(n):
        pid, _ = project.add_prompt([{"role": "user", "content": f"q{i}"}])
        a, _ = project.add_response(pid, f"a{i}")
        b, _ = project.add_response(pid, f"b{i}")
        out.append(project.add_comparison(pid, a, b))
    return out


def test_position_bias_counts_picks_of_the_left_side(project):
    ids = _pairs(project, 10)
    # 8 of 10 pick the response shown on the left.
    for i, cid in enumerate(ids):
        left = "a" if i % 2 else "b"
        verdict = left if i < 8 else ("b" if left == "a" else "a")
        project.judge(cid, verdict, left_side=left, strength="clear")
    pb = position_bias(project)
    assert (pb.n, pb.left_picks) == (10, 8)
    assert pb.share_left == 0.8
    assert pb.p_value == pytest.approx(0.109375)
    project.retract("comparison", ids[0])
    assert position_bias(project).n == 9


def test_ties_are_not_part_of_position_bias(project):
    ids = _pairs(project, 3)
    project.judge(ids[0], "tie", left_side="a")
    project.judge(ids[1], "both_bad", left_side="a")
    assert position_bias(project).n == 0
    assert math.isnan(position_bias(project).share_left)


def test_retest_agreement(project):
    ids = _pairs(project, 4)
    verdicts = [("a", "clear"), ("b", "strong"), ("tie", None), ("a", "slight")]
    for cid, (v, s) in zip(ids, verdicts):
        project.judge(cid, v, strength=s)
    again = [("a", "clear"), ("b", "clear"), ("a", "clear"), None]  # last retest not judged yet
    for cid, v in zip(ids, again):
        r = project.add_retest(cid)
        if v:
            project.judge(r, v[0], strength=v[1])
    ra = retest_agreement(project)
    assert (ra.pairs, ra.agree, ra.exact) == (3, 2, 1)
    assert ra.rate == pytest.approx(2 / 3)
    # first = [a, b, tie], second = [a, b, a]: po = 2/3, pe = (1*2 + 1*1 + 0) / 9 = 1/3, kappa = 0.5
    assert ra.kappa == pytest.approx(0.5)


def test_retest_agreement_counts_only_the_experts_own_originals(project, tmp_path):
    """A retest linked to an imported judgment (no guideline version) measures nobody's consistency: left out."""
    (tmp_path / "pref.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "x", "rejected": "y"}) + "\n", encoding="utf-8")
    import_file(project, tmp_path / "pref.jsonl")
    (imported,) = [c.id for c in project.comparisons()]
    assert project.get_comparison(imported).guideline_version is None
    r = project.add_retest(imported)
    project.judge(r, "b")
    assert retest_agreement(project).pairs == 0
    own = _pairs(project, 1)[0]
    project.judge(own, "a")
    project.judge(project.add_retest(own), "a")
    ra = retest_agreement(project)
    assert (ra.pairs, ra.agree) == (1, 1)


def test_judgments_per_hour_and_median(project):
    ids = _pairs(project, 3)
    project.judge(ids[0], "a", judged_at="2026-01-01T10:05:00.000+00:00", time_spent_ms=1000)
    project.judge(ids[1], "b", judged_at="2026-01-01T10:55:00.000+00:00", time_spent_ms=3000)
    project.judge(ids[2], "tie", judged_at="2026-01-01T12:00:00.000+00:00", time_spent_ms=2000)
    hours = judgments_per_hour(project, hours=4, now=datetime(2026, 1, 1, 12, 30, tzinfo=timezone.utc))
    assert hours == [("2026-01-01T09", 0), ("2026-01-01T10", 2), ("2026-01-01T11", 0), ("2026-01-01T12", 1)]
    assert time_spent_median_ms(project) == 2000
    assert session_rate(30, 1800) == 60
    assert session_rate(3, 10) == 0
