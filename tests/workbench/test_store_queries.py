"""The store's named look-ups that the core, the engine and the window ask instead of writing SQL: each answers
what its name says on a small real project, including the rows it must leave out."""

from __future__ import annotations

import threading

import pytest

from workbench.errors import WorkbenchError
from workbench.store import Project


def _prompt(project: Project, text: str, **kw) -> int:
    return project.add_prompt([{"role": "user", "content": text}], **kw)[0]


def test_prompt_lookups(project: Project) -> None:
    p1 = _prompt(project, "How do ferns grow?", tags=["botany"])
    p2 = _prompt(project, "Why do ferns curl?", split="heldout", tags=["botany", "why"])
    p3 = _prompt(project, "Name a prime.", split="heldout", tags=["maths"])
    assert project.prompt_ids_with_title("ferns") == [p1, p2]
    assert project.prompt_ids_with_title("ferns", split="heldout") == [p2]
    assert project.prompt_ids_with_title("") == []
    assert project.known_prompt_ids([p3, 999, p1, p1]) == {p1, p3}
    assert project.tags() == ["botany", "maths", "why"]
    assert project.tags(split="heldout") == ["botany", "maths", "why"] and project.tags(split="train") == ["botany"]
    assert (project.prompt_count(), project.prompt_count("train"), project.prompt_count("heldout")) == (3, 1, 2)


def test_meta_prefix_is_literal(project: Project) -> None:
    project.set_meta("eval_round:1", "one")
    project.set_meta("eval_round:2", "two")
    project.set_meta("evalXround:3", "not a round")  # '_' would match any character in a LIKE pattern
    assert project.meta_with_prefix("eval_round:") == {"eval_round:1": "one", "eval_round:2": "two"}


def test_response_and_comparison_lookups(project: Project) -> None:
    pid = _prompt(project, "q")
    base, _ = project.add_response(pid, "short", origin="model", model="m", created_at="2026-01-01T00:00:00.000+00:00")
    tuned, _ = project.add_response(pid, "long", origin="model", model="m", adapter="/a",
                                    created_at="2026-01-02T00:00:00.000+00:00")
    human, _ = project.add_response(pid, "mine", source="import")
    assert project.response_model(tuned) == ("m", "/a") and project.response_model(human) == (None, None)
    assert project.response_model(999) is None
    assert [r[0] for r in project.model_responses_newest_first(pid)] == [tuned, base]
    assert [r.id for r in project.responses(source="import")] == [human]
    c1 = project.add_comparison(pid, base, tuned, source="eval:1", kind="eval")
    c2 = project.add_comparison(pid, base, human, source="eval:1", kind="eval", verdict="a")
    retest = project.add_retest(c2)
    c3 = project.add_comparison(pid, tuned, human, source="batch", verdict="both_bad")
    assert [c.id for c in project.comparisons(source="eval:1")] == [c1, c2, retest]
    assert [c.id for c in project.comparisons(kind="train")] == [c3]
    assert [row[0] for row in project.eval_items("eval:1")] == [c1, c2]  # live, no retests
    assert project.has_eval_item("eval:1", pid) and not project.has_eval_item("eval:2", pid)
    assert set(project.comparisons_by_id([c1, c3, 999])) == {c1, c3}
    assert project.comparison_sources() == ["batch", "eval:1"]
    assert project.both_bad_prompt_ids() == [pid]
    assert project.has_retest(c2) and not project.has_retest(c1)


def test_flag_and_demonstration_lookups(project: Project) -> None:
    pid = _prompt(project, "q")
    rid, _ = project.add_response(pid, "answer")
    on_prompt = project.add_flag(pid, "violence", "high")
    on_response = project.add_flag(pid, "over_refusal", "low", response_id=rid, note="xstest final_label=2_full_refusal",
                                   source="xstest:m")
    project.add_flag(pid, "over_refusal", None, response_id=rid, present=False, note="other note")
    assert [f[0] for f in project.flags_for_prompt(pid)] == [on_prompt]
    assert project.get_flag(on_response).response_id == rid and len(project.flags()) == 3
    notes = project.flag_notes("over_refusal", "xstest final_label=")
    assert notes == {rid: "xstest final_label=2_full_refusal"}
    assert project.flag_notes("over_refusal", "xstest final_label=", source="elsewhere") == {}
    demo, drid, _ = project.add_demonstration(pid, "Better.", edited_from=rid)
    assert project.demonstration_response_id(demo) == drid
    assert [(d.id, d.edited_from) for d in project.demonstrations()] == [(demo, rid)]
    with pytest.raises(WorkbenchError, match="no flag with id 999"):
        project.get_flag(999)


def test_queue_lookups_for_rank_and_write(project: Project) -> None:
    ranked, open_one, judged = (_prompt(project, t) for t in ("ranked", "open", "judged"))
    for pid in (ranked, open_one, judged):
        for k in range(3):
            project.add_response(pid, f"{pid}-{k}")
    ids = [r.id for r in project.responses_for(ranked)]
    rk = project.add_ranking(ranked, {ids[0]: 1, ids[1]: 2, ids[2]: 2})
    j = [r.id for r in project.responses_for(judged)]
    project.add_comparison(judged, j[0], j[1], verdict="a")
    assert project.next_rank_prompt() == open_one and project.next_rank_prompt(exclude={open_one}) == judged
    assert project.ranking_prompt_id(rk) == ranked and project.ranking_ids() == [rk]
    assert project.ranking_retest_of(rk) is None
    assert project.next_prompt_lacking_good_answer() == open_one
    assert not project.lacks_good_answer(judged) and not project.lacks_good_answer(ranked)


def test_snapshot_and_run_lookups(project: Project, tmp_path) -> None:
    pid = _prompt(project, "q")
    other = _prompt(project, "r")
    a, _ = project.add_response(pid, "x")
    b, _ = project.add_response(pid, "y")
    cid = project.add_comparison(pid, a, b, verdict="a")
    sid = project.create_snapshot("preference", {"comparison": [cid], "prompt": [other]})
    assert project.get_snapshot(sid)["kind"] == "preference" and project.get_snapshot(999) is None
    assert project.snapshot_sizes(sid) == {"comparison": 1, "prompt": 1}
    assert project.snapshot_prompt_ids(sid) == [pid, other]
    assert set(project.snapshot_prompt_messages(sid)) == {pid}
    assert set(project.snapshot_prompt_messages(sid, with_prompt_items=True)) == {pid, other}
    kept = project.record_snapshot("project", "abc", {"comparison": 1}, options={"out": "x"}, note="n")
    assert project.get_snapshot(kept)["content_hash"] == "abc" and project.snapshot_items(kept, "comparison") == []
    project.delete_snapshot(sid)
    assert project.get_snapshot(sid) is None and not project.in_snapshot("comparison", cid)

    first = project.create_run("rm", {"x": 1}, name="one")
    second = project.create_run("rm", {"x": 2}, name="two")
    project.update_run(second, status="done")
    project.create_run("sft", {})
    assert [r["id"] for r in project.runs_of_stage("rm")] == [first, second]
    assert [r["id"] for r in project.runs_of_stage("rm", statuses=("done",), newest_first=True)] == [second]
    project.log_metrics(first, 7, {"reward": 1.0})
    project.log_metrics(first, 7, {"reward": 2.0})  # written later: supersedes the first
    assert project.metric_values(first, "reward") == [(7, 1.0), (7, 2.0)]
    project.add_checkpoint(first, 20, str(tmp_path / "b"), is_best=True)
    project.add_checkpoint(first, 10, str(tmp_path / "a"))
    assert [(c["step"], c["is_best"]) for c in project.checkpoints(first)] == [(10, False), (20, True)]


def test_stats_aggregates_for_the_dashboard(project: Project) -> None:
    pid = _prompt(project, "q")
    a, _ = project.add_response(pid, "x")
    b, _ = project.add_response(pid, "y")
    c1 = project.add_comparison(pid, a, b, verdict="a", left_side="a", time_spent_ms=100,
                                judged_at="2026-01-01T10:05:00.000+00:00")
    project.add_comparison(pid, b, a, verdict="a", left_side="b", time_spent_ms=300,
                           judged_at="2026-01-01T11:00:00.000+00:00")
    r = project.add_retest(c1)
    project.judge(r, "a", left_side="b", judged_at="2026-01-01T12:00:00.000+00:00")
    project.add_comparison(pid, a, b, verdict="b", judged_at="2026-01-01T12:30:00.000+00:00")  # shown side unknown
    assert project.position_counts() == (3, 1)  # A/B judgments whose shown side is known; one picked the left
    assert project.position_counts(since="2026-01-01T11:30:00.000+00:00") == (1, 0)
    assert project.retest_verdicts() == [("a", None, "a", None)]
    assert project.judgments_by_hour("2026-01-01T11:00:00.000+00:00") == {"2026-01-01T11": 1, "2026-01-01T12": 2}
    assert project.recent_times_spent_ms(limit=1) == [300]
    assert project.judged_since("2026-01-01T11:00:00.000+00:00") == 2
    project.add_demonstration(pid, "Good.")
    assert project.live_label_counts("train") == {"demonstrations": 1, "safety_labels": 0}


def test_connection_upkeep_and_consistent_reads(project: Project, project_path) -> None:
    assert project.is_open
    with pytest.raises(WorkbenchError, match="checkpoint mode"):
        project.checkpoint_wal("EVERYTHING")
    project.checkpoint_wal("TRUNCATE")
    project.defer_wal_checkpoints()
    _prompt(project, "before")
    seen: list[int] = []
    with project.read_transaction():
        seen.append(project.prompt_count())
        def write_elsewhere() -> None:
            with Project.open(project_path) as other:
                other.add_prompt([{"role": "user", "content": "during"}])

        writer = threading.Thread(target=write_elsewhere)
        writer.start()
        writer.join(30)
        seen.append(project.prompt_count())  # the same instant: the other connection's prompt is not seen yet
    seen.append(project.prompt_count())
    assert seen == [1, 1, 2]
    project.close()
    assert not project.is_open
