"""The History list read a page at a time (keyset pagination): every row once, in order, whatever the page size,
with rows sharing a time, filters, and screen-side verdicts."""

from __future__ import annotations

import pytest

from workbench.store import Project

STAMP = "2026-02-01T10:00:00.000+00:00"


def _fill(project: Project) -> list[tuple[str, int]]:
    """Comparisons, rankings, demonstrations and flags, many of them at the very same time."""
    made = []
    for i in range(12):
        pid, _ = project.add_prompt([{"role": "user", "content": f"Question {i}"}])
        a, _ = project.add_response(pid, f"answer a{i}")
        b, _ = project.add_response(pid, f"answer b{i}")
        when = STAMP if i % 3 else f"2026-02-0{1 + i % 5}T09:00:00.000+00:00"
        made.append(("comparison", project.add_comparison(pid, a, b, verdict="a", left_side="b", judged_at=when)))
        if i % 2:
            made.append(("ranking", project.add_ranking(pid, {a: 1, b: 2}, judged_at=STAMP)))
        if i % 4 == 0:
            made.append(("demonstration", project.add_demonstration(pid, f"best {i}", created_at=STAMP)[0]))
            made.append(("flag", project.add_flag(pid, "violence", "low", response_id=b, created_at=STAMP)))
    project.add_comparison(pid, a, b)  # pending: never in History
    return made


def _all_pages(project: Project, size: int, **filters) -> list[tuple[str, int]]:
    rows, after = [], None
    while True:
        page = project.history(**filters, after=after, limit=size)
        rows += page
        if len(page) < size:
            return [(r.kind, r.id) for r in rows]
        after = page[-1].cursor


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_pages_cover_every_row_once_in_order(project, size):
    made = _fill(project)
    everything = [(r.kind, r.id) for r in project.history(limit=1000)]
    assert sorted(everything) == sorted(made)
    assert _all_pages(project, size) == everything
    whens = [r.when for r in project.history(limit=1000)]
    assert whens == sorted(whens, reverse=True)


def test_pages_with_filters_and_screen_sides(project):
    made = _fill(project)
    pid, _ = project.add_prompt([{"role": "user", "content": "Shown"}])
    a, _ = project.add_response(pid, "x")
    b, _ = project.add_response(pid, "y")
    shown_left_a = project.add_comparison(pid, a, b, verdict="a", strength="strong", left_side="a", judged_at=STAMP)
    comparisons = {("comparison", i) for k, i in made if k == "comparison"}
    in_order = _all_pages(project, 100)
    # _fill's comparisons picked "a" while "b" was on the left: the right response, every one of them
    assert _all_pages(project, 2, verdict="right") == [r for r in in_order if r in comparisons]
    assert _all_pages(project, 2, verdict="left") == [("comparison", shown_left_a)]
    assert project.history(verdict="left")[0].detail == "left much better"
    assert _all_pages(project, 3, kind="flag") == [(k, i) for k, i in _all_pages(project, 100) if k == "flag"]


def test_an_item_as_it_is_now(project):
    pid, _ = project.add_prompt([{"role": "user", "content": "q"}])
    a, _ = project.add_response(pid, "x")
    b, _ = project.add_response(pid, "y")
    cid = project.add_comparison(pid, a, b, verdict="b", strength="slight", left_side="a")
    assert project.history_item("comparison", cid).detail == "right slightly better"
    project.create_snapshot("preference", {"comparison": [cid]})
    project.retract("comparison", cid)
    assert project.history_item("comparison", cid).retracted
    assert project.history_item("comparison", 999) is None
