"""The annotation queue on real project files: order, filters, skip and wrap-around, blind retests."""

from __future__ import annotations

import json

from workbench.importers import import_file
from workbench.queue import AnnotationQueue, QueueConfig, sources, tags


def _fill(project, n, *, source="s", tag=None):
    ids = []
    for i in range(n):
        pid, _ = project.add_prompt([{"role": "user", "content": f"{source} q{i}"}], source=source, tags=[tag] if tag else [])
        a, _ = project.add_response(pid, f"a{i}")
        b, _ = project.add_response(pid, f"b{i}")
        ids.append(project.add_comparison(pid, a, b, source=source))
    return ids


def test_pending_in_id_order_then_empty(project):
    ids = _fill(project, 3)
    q = AnnotationQueue(project, QueueConfig(retest_share=0))
    got = []
    while (c := q.next()) is not None:
        got.append(c.id)
        project.judge(c.id, "a")
        q.judged(c.id)
    assert got == ids


def test_filters_by_source_and_tag(project):
    _fill(project, 2, source="x")
    y = _fill(project, 2, source="y", tag="hard")
    assert sources(project) == ["x", "y"] and tags(project) == ["hard"]
    for config in (QueueConfig(source="y", retest_share=0), QueueConfig(tag="hard", retest_share=0)):
        q = AnnotationQueue(project, config)
        assert q.next().id == y[0]


def test_skipped_items_come_back_after_the_rest(project):
    ids = _fill(project, 3)
    q = AnnotationQueue(project, QueueConfig(retest_share=0))
    first = q.next()
    q.skip(first.id)
    second = q.next()
    project.judge(second.id, "a")
    third = q.next()
    project.judge(third.id, "a")
    assert q.next().id == first.id == ids[0]


def test_retests_are_blind_copies_linked_to_old_judgments(project):
    ids = _fill(project, 200)
    q = AnnotationQueue(project, QueueConfig(retest_share=0.25, min_gap=5), seed=1)
    retests, served = [], 0
    while (c := q.next()) is not None and served < 400:
        served += 1
        if c.retest_of is not None:
            retests.append(c)
            original = project.get_comparison(c.retest_of)
            assert original.verdict is not None and (c.response_a, c.response_b) == (original.response_a, original.response_b)
            assert c.retest_of not in q.recent[:-1]  # never a judgment made in the last few items
        project.judge(c.id, "a")
        q.judged(c.id)
    share = len(retests) / served
    assert 0.12 < share < 0.35, share
    originals = [c.retest_of for c in retests]
    assert len(originals) == len(set(originals))  # each original is retested at most once
    assert all(o in ids for o in originals)


def test_no_retest_when_share_is_zero_or_nothing_judged(project):
    _fill(project, 3)
    q = AnnotationQueue(project, QueueConfig(retest_share=1.0))
    assert q.next().retest_of is None  # nothing judged yet: a pending item instead
    q0 = AnnotationQueue(project, QueueConfig(retest_share=0))
    c = q0.next()
    project.judge(c.id, "a")
    assert all(q0.next().retest_of is None for _ in range(2))


def test_imported_judgments_are_never_retested(project, tmp_path):
    """Only the expert's own judgments (made here: they carry a guideline version) come back as retests; imported
    crowd judgments (no guideline version) never do, whatever the share."""
    rows = [{"prompt": f"imported q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(30)]
    (tmp_path / "pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_file(project, tmp_path / "pref.jsonl")
    q = AnnotationQueue(project, QueueConfig(retest_share=1.0), seed=1)
    assert q.next() is None  # nothing pending and nothing of the expert's own to retest
    assert project.stats()["comparisons"] == 30
    own = _fill(project, 2, source="desk")
    for cid in own:
        project.judge(cid, "a")
    project.retract("comparison", own[1])
    served = [q.next() for _ in range(5)]
    retests = [c for c in served if c is not None and c.retest_of is not None]
    # One retest row (served again while it waits), of the live own judgment: never an imported or retracted one.
    assert retests and {(c.id, c.retest_of) for c in retests} == {(retests[0].id, own[0])}


def test_write_queue_offers_prompts_without_a_good_answer_both_bad_first(project):
    from workbench.queue import WriteQueue

    ids = _fill(project, 4)
    prompts = [project.get_comparison(c).prompt_id for c in ids]
    project.judge(ids[0], "a")          # has a winner: never offered
    project.judge(ids[2], "both_bad")   # offered first
    q = WriteQueue(project)
    assert q.next() == prompts[2]
    assert q.next(prompts[2]) == prompts[3]        # then on from the cursor
    assert q.next(0, exclude={prompts[2]}) == prompts[1]
    project.add_demonstration(prompts[2], "a good answer")
    assert q.next() == prompts[1]


def test_an_item_put_back_by_an_undo_comes_next_and_an_unskip_takes_a_skip_back(project):
    _fill(project, 4)
    q = AnnotationQueue(project, QueueConfig(retest_share=0))
    first = q.next()
    q.skip(first.id)
    second = q.next()
    # An undo shows the skipped item again in place of the second: the second must not be passed over.
    q.unskip(first.id)
    q.put_back(second.id)
    project.judge(first.id, "tie")
    assert q.next().id == second.id
    assert first.id not in q.skipped
