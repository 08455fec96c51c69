"""The project file: schema, pragmas, migrations, de-duplication, judgments, undo/retract, flags, snapshots, runs."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from workbench.errors import NewerSchemaError, NotAProjectError, WorkbenchError
from workbench.schema import APPLICATION_ID, SCHEMA_VERSION
from workbench.store import Project, is_project_file
from workbench.taxonomy import BUILTIN_KEYS

CONV = [{"role": "user", "content": "What is 2 + 2?"}]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pair(project: Project, text: str = "What is 2 + 2?") -> tuple[int, int, int]:
    pid, _ = project.add_prompt([{"role": "user", "content": text}])
    a, _ = project.add_response(pid, "4")
    b, _ = project.add_response(pid, "5")
    return pid, a, b


def test_new_project_has_wal_foreign_keys_schema_and_taxonomy(project: Project, project_path: Path) -> None:
    conn = project.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    keys = [c[0] for c in project.categories()]
    assert set(BUILTIN_KEYS) <= set(keys) and len(BUILTIN_KEYS) >= 10
    assert project.guideline()[0] == 1
    # another process recognises the file while this connection still holds it open
    assert is_project_file(project_path)


def test_create_refuses_to_overwrite(project_path: Path) -> None:
    project_path.write_text("precious")
    with pytest.raises(WorkbenchError, match="already exists"):
        Project.create(project_path)
    assert project_path.read_text() == "precious"


def test_foreign_keys_are_enforced(project: Project) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        project.add_response(12345, "orphan")


def test_prompts_and_responses_are_deduplicated_by_content(project: Project) -> None:
    p1, new1 = project.add_prompt(CONV, tags=["math"])
    p2, new2 = project.add_prompt([dict(m) for m in CONV], tags=["easy"])
    assert (p1, new1, new2) == (p2, True, False)
    assert project.get_prompt(p1).tags == ["easy", "math"]
    r1, c1 = project.add_response(p1, "4")
    r2, c2 = project.add_response(p1, "4")
    assert r1 == r2 and c1 and not c2
    other, _ = project.add_prompt([{"role": "user", "content": "What is 3 + 3?"}])
    r3, c3 = project.add_response(other, "4")  # same text, other prompt: a different response
    assert c3 and r3 != r1


def test_bad_messages_are_refused_with_the_field(project: Project) -> None:
    with pytest.raises(ValueError, match=r"messages\[0\]\.role"):
        project.add_prompt([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="empty"):
        project.add_prompt([])
    assert project.stats()["prompts"] == 0


def test_judge_records_every_field_and_the_guideline_version(project: Project) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b)
    assert project.next_pending().id == cid
    project.set_guideline("# v2\nPrefer correct maths.")
    project.judge(cid, "b", strength="strong", left_side="b", criteria={"honesty": "b"}, note="5 is wrong? no", time_spent_ms=4200)
    c = project.get_comparison(cid)
    assert (c.verdict, c.strength, c.left_side, c.criteria, c.time_spent_ms, c.guideline_version) == (
        "b", "strong", "b", {"honesty": "b"}, 4200, 2)
    assert c.judged_at and c.note == "5 is wrong? no"
    assert project.next_pending() is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"verdict": "left"}, "verdict"),
        ({"verdict": "tie", "strength": "clear"}, "strength applies only"),
        ({"verdict": "a", "strength": "huge"}, "strength"),
        ({"verdict": "a", "criteria": {"beauty": "a"}}, "criterion"),
    ],
)
def test_invalid_judgments_are_refused(project: Project, kwargs: dict, message: str) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b)
    with pytest.raises(WorkbenchError, match=message):
        project.judge(cid, **kwargs)
    assert project.get_comparison(cid).verdict is None


def test_comparison_needs_two_responses_of_its_prompt(project: Project) -> None:
    pid, a, b = _pair(project)
    other, _, ob = _pair(project, "Name a colour.")
    with pytest.raises(WorkbenchError):
        project.add_comparison(pid, a, a)
    with pytest.raises(WorkbenchError, match="does not belong"):
        project.add_comparison(pid, a, ob)


def test_undo_clears_unsnapshotted_judgment_and_retracts_snapshotted_one(project: Project) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b)
    project.judge(cid, "a", strength="slight")
    assert project.undo_judgment(cid) == "cleared"
    assert project.get_comparison(cid).verdict is None and project.next_pending().id == cid

    project.judge(cid, "a", strength="clear")
    project.create_snapshot("preference", {"comparison": [cid]})
    assert project.undo_judgment(cid) == "retracted"
    kept = project.get_comparison(cid)
    assert kept.verdict == "a" and kept.retracted_at is not None  # the snapshot stays reproducible
    again = project.next_pending()
    assert again is not None and again.id != cid and {again.response_a, again.response_b} == {a, b}


def test_undo_returns_the_item_now_pending_in_the_queue(project: Project) -> None:
    pid, a, b = _pair(project)
    other = project.add_comparison(pid, a, project.add_response(pid, "6")[0])  # a pending item with a later id
    cid = project.add_comparison(pid, a, b, source="batch", verdict="b", strength="strong", left_side="a")
    undone = project.undo(cid)
    assert (undone.how, undone.item.id, undone.item.verdict) == ("cleared", cid, None)
    assert undone.item == project.get_comparison(cid)

    project.judge(cid, "a", strength="clear")
    project.create_snapshot("preference", {"comparison": [cid]})
    undone = project.undo(cid)
    fresh = undone.item
    assert undone.how == "retracted" and fresh.id not in (cid, other)
    assert (fresh.prompt_id, fresh.response_a, fresh.response_b, fresh.source, fresh.verdict) == (pid, a, b, "batch", None)
    assert fresh == project.next_pending(after_id=other)
    with pytest.raises(WorkbenchError, match="no judgment to undo"):
        project.undo(fresh.id)


def test_change_verdict_overwrites_or_retracts_and_judges_afresh(project: Project) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b, verdict="a", strength="slight", left_side="b", note="first look")
    assert project.change_verdict(cid, "b", "strong") == cid
    c = project.get_comparison(cid)
    assert (c.verdict, c.strength, c.left_side, c.note) == ("b", "strong", "b", "first look")
    project.create_snapshot("preference", {"comparison": [cid]})
    new_id = project.change_verdict(cid, "tie", None)
    assert new_id != cid
    old, new = project.get_comparison(cid), project.get_comparison(new_id)
    assert (old.verdict, old.strength) == ("b", "strong") and old.retracted_at is not None
    assert (new.verdict, new.strength, new.left_side, new.note, new.retracted_at) == ("tie", None, "b", "first look", None)


def test_history_lists_every_kind_newest_first_with_filters(project: Project) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b, verdict="a", strength="clear", judged_at="2026-01-02T00:00:00.000+00:00")
    rk = project.add_ranking(pid, {a: 1, b: 2}, judged_at="2026-01-03T00:00:00.000+00:00")
    demo, _, _ = project.add_demonstration(pid, "Four.", created_at="2026-01-04T00:00:00.000+00:00")
    flag = project.add_flag(pid, "violence", "low", response_id=b, note="graphic",
                            created_at="2026-01-05T00:00:00.000+00:00")
    rows = project.history()
    assert [(r.kind, r.id) for r in rows] == [("flag", flag), ("demonstration", demo), ("ranking", rk), ("comparison", cid)]
    # Told from the expert's point of view: no side recorded, so response_a is the one displayed on the left.
    assert rows[-1].detail == "left better · not shown side by side"
    assert rows[0].detail == f"violence · low · response #{b}"
    assert [r.kind for r in project.history(kind="ranking")] == ["ranking"]
    assert [r.id for r in project.history(text="graphic")] == [flag]
    assert [r.id for r in project.history(date_from="2026-01-03", date_to="2026-01-05")] == [demo, rk]
    assert project.history(verdict="b") == [] and project.history(tag="nothing") == []
    assert project.retract("flag", flag) == "deleted" and flag not in [r.id for r in project.history(kind="flag")]
    assert [r.id for r in project.history(limit=1)] == [demo]


def test_retract_deletes_or_marks(project: Project) -> None:
    pid, a, b = _pair(project)
    flag = project.add_flag(pid, "misinformation", "low", response_id=b, note="5 is wrong")
    assert project.retract("flag", flag) == "deleted"
    flag2 = project.add_flag(pid, "misinformation", "high", response_id=b)
    project.create_snapshot("safety", {"flag": [flag2]})
    assert project.retract("flag", flag2) == "retracted"
    assert project.flags_for_response(b) == []
    demo, rid, _ = project.add_demonstration(pid, "2 + 2 = 4.")
    assert project.retract("demonstration", demo) == "deleted"
    with pytest.raises(WorkbenchError):
        project.get_response(rid)  # the expert text no one else uses goes with it


def test_write_better_answer_wins_against_both_shown(project: Project) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b)
    demo_id, made = project.write_better_answer(cid, "2 + 2 = 4, because two pairs make four.")
    assert len(made) == 2
    for new in made:
        c = project.get_comparison(new)
        assert c.verdict == "a" and c.response_b in (a, b)
        assert project.get_response(c.response_a).origin == "expert"
    assert project.stats()["demonstrations"] == 1


def test_rankings_allow_ties_and_check_size(project: Project) -> None:
    pid, a, b = _pair(project)
    c, _ = project.add_response(pid, "four")
    rk = project.add_ranking(pid, {a: 1, c: 1, b: 2})
    assert project.get_ranking(rk) == {a: 1, c: 1, b: 2}
    with pytest.raises(WorkbenchError, match="2 to 9"):
        project.add_ranking(pid, {a: 1})


def test_flags_need_known_category_and_severity_and_taxonomy_extends(project: Project) -> None:
    pid, a, b = _pair(project)
    with pytest.raises(WorkbenchError, match="unknown flag category"):
        project.add_flag(pid, "spam", "low", response_id=a)
    with pytest.raises(WorkbenchError, match="severity"):
        project.add_flag(pid, "violence", "extreme", response_id=a)
    project.add_category("spam", "Spam", "Unsolicited advertising")
    project.add_flag(pid, "spam", "low", response_id=a)
    project.add_flag(pid, "violence", None, present=False)  # known absent: a negative label
    stats = project.stats()
    assert stats["flags"] == 1 and stats["safety_labels"] == 2 and stats["flag_categories"] == {"spam": 1}


def test_snapshot_hash_depends_on_content(project: Project) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b, verdict="a", strength="clear")
    s1 = project.create_snapshot("preference", {"comparison": [cid]})
    s2 = project.create_snapshot("preference", {"comparison": [cid]})
    project.judge(cid, "b")
    s3 = project.create_snapshot("preference", {"comparison": [cid]})
    hashes = {s["id"]: s["content_hash"] for s in project.snapshots()}
    assert hashes[s1] == hashes[s2] != hashes[s3]
    assert project.snapshot_items(s1, "comparison") == [cid]


def test_runs_metrics_and_checkpoints(project: Project, tmp_path: Path) -> None:
    run = project.create_run("sft", {"lr": 1e-4}, base_model="tiny")
    project.update_run(run, status="running", pid=123)
    project.log_metrics(run, 1, {"train/loss": 2.5, "train/lr": 1e-4})
    project.log_metrics(run, 2, {"train/loss": 2.0})
    project.add_checkpoint(run, 2, str(tmp_path / "ckpt-2"), metrics={"eval/loss": 2.1}, is_best=True)
    project.update_run(run, status="done", final_metrics={"train/loss": 2.0})
    r = project.get_run(run)
    assert r["status"] == "done" and r["config"] == {"lr": 1e-4} and r["final_metrics"] == {"train/loss": 2.0}
    assert [v for _, _, v in project.metrics(run, "train/loss")] == [2.5, 2.0]
    with pytest.raises(WorkbenchError):
        project.update_run(run, status="exploded")


def test_stats_has_the_documented_integer_keys(project: Project) -> None:
    pid, a, b = _pair(project)
    project.add_comparison(pid, a, b, verdict="tie")
    project.add_comparison(pid, b, a)
    s = project.stats()
    for key in ("prompts", "responses", "comparisons", "rankings", "demonstrations", "flags"):
        assert isinstance(s[key], int)
    assert s["comparisons"] == 2 and s["verdicts"]["tie"] == 1 and s["verdicts"]["pending"] == 1


def test_open_refuses_files_that_are_not_projects_and_leaves_them_alone(tmp_path: Path) -> None:
    text = tmp_path / "notes.wbp"
    text.write_text("just some text\n")
    plain = tmp_path / "other.sqlite"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    for path in (text, plain):
        before = _digest(path)
        with pytest.raises(NotAProjectError, match="not an RLHF Workbench project"):
            Project.open(path)
        assert _digest(path) == before
    with pytest.raises(NotAProjectError, match="no such project"):
        Project.open(tmp_path / "missing.wbp")


def test_open_refuses_a_newer_schema_and_leaves_it_byte_identical(project_path: Path) -> None:
    Project.create(project_path).close()
    conn = sqlite3.connect(project_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    before = _digest(project_path)
    with pytest.raises(NewerSchemaError, match="newer"):
        Project.open(project_path)
    assert _digest(project_path) == before


def test_older_schema_is_backed_up_then_migrated(tmp_path: Path) -> None:
    old = tmp_path / "old.wbp"
    conn = sqlite3.connect(old)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("CREATE TABLE scratch (x)")  # any content, so the backup has something to keep
    conn.execute("PRAGMA user_version=0")
    conn.commit()
    conn.close()
    with Project.open(old) as p:
        assert p.schema_version == SCHEMA_VERSION
    (backup,) = (tmp_path / "old.wbp.backups").glob("old-*-before-migration-v0.wbp")
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_failed_transaction_leaves_nothing(project: Project) -> None:
    with pytest.raises(RuntimeError):
        with project.transaction():
            project.add_prompt(CONV)
            raise RuntimeError("boom")
    assert project.stats()["prompts"] == 0


def test_trigger_counters_match_direct_counts_after_mixed_operations(project: Project) -> None:
    import random

    rng = random.Random(7)
    comparisons, flags = [], []
    for i in range(30):
        pid, a, b = _pair(project, f"question {i}")
        if i % 5 == 0:
            project.set_split(pid, "heldout")
        cid = project.add_comparison(pid, a, b)
        comparisons.append(cid)
        flags.append(project.add_flag(pid, rng.choice(["violence", "privacy"]), "low", response_id=a))
        if i % 3 == 0:
            project.add_flag(pid, "violence", None, present=False)
    for cid in comparisons:
        roll = rng.random()
        if roll < 0.6:
            v = rng.choice(["a", "b", "tie", "both_bad"])
            project.judge(cid, v, strength=rng.choice(["slight", "clear", None]) if v in "ab" else None)
    project.create_snapshot("preference", {"comparison": comparisons[:5], "flag": flags[:5]})
    for cid in comparisons[:10]:
        if project.get_comparison(cid).verdict:
            project.undo_judgment(cid)
    for fid in flags[:8]:
        project.retract("flag", fid)
    project.add_retest(comparisons[-1])
    project.set_split(project.get_comparison(comparisons[0]).prompt_id, "train")

    s = project.stats()
    q = lambda sql: project.conn.execute(sql).fetchone()[0]  # noqa: E731
    assert s["prompts"] == q("SELECT COUNT(*) FROM prompt")
    assert s["heldout_prompts"] == q("SELECT COUNT(*) FROM prompt WHERE split = 'heldout'")
    assert s["responses"] == q("SELECT COUNT(*) FROM response")
    assert s["comparisons"] == q("SELECT COUNT(*) FROM comparison")
    assert s["retracted"] == q("SELECT COUNT(*) FROM comparison WHERE retracted_at IS NOT NULL") > 0
    assert s["retests"] == q("SELECT COUNT(*) FROM comparison WHERE retest_of IS NOT NULL") == 1
    for v in ("a", "b", "tie", "both_bad"):
        assert s["verdicts"][v] == q(f"SELECT COUNT(*) FROM comparison WHERE verdict = '{v}' AND retracted_at IS NULL")
    assert s["verdicts"]["pending"] == q("SELECT COUNT(*) FROM comparison WHERE verdict IS NULL")
    for k in ("slight", "clear", "strong"):
        assert s["strengths"][k] == q(f"SELECT COUNT(*) FROM comparison WHERE strength = '{k}' AND retracted_at IS NULL")
    assert s["flags"] == q("SELECT COUNT(*) FROM safety_flag WHERE present = 1 AND retracted_at IS NULL")
    assert s["safety_labels"] == q("SELECT COUNT(*) FROM safety_flag")
    direct = dict(project.conn.execute(
        "SELECT category, COUNT(*) FROM safety_flag WHERE present = 1 AND retracted_at IS NULL GROUP BY category"))
    assert s["flag_categories"] == direct


def test_retracting_an_original_keeps_it_so_its_retest_stays_a_retest(project: Project) -> None:
    pid, a, b = _pair(project)
    original = project.add_comparison(pid, a, b, verdict="a", strength="clear")
    retest = project.add_retest(original)
    project.judge(retest, "b")
    assert project.retract("comparison", original) == "retracted"
    assert project.get_comparison(retest).retest_of == original


def test_stats_do_not_count_retracted_judgments(project: Project) -> None:
    pid, a, b = _pair(project)
    cid = project.add_comparison(pid, a, b, verdict="a", strength="slight")
    project.create_snapshot("preference", {"comparison": [cid]})
    project.undo_judgment(cid)
    again = project.next_pending()
    project.judge(again.id, "b", strength="strong")
    s = project.stats()
    assert s["judged"] == 1 and s["verdicts"]["a"] == 0 and s["verdicts"]["b"] == 1
    assert s["strengths"] == {"slight": 0, "clear": 0, "strong": 1}


def test_retracted_rankings_and_demonstrations_no_longer_count(project: Project) -> None:
    pid, a, b = _pair(project)
    rk = project.add_ranking(pid, {a: 1, b: 2})
    demo, _, _ = project.add_demonstration(pid, "Four.")
    project.create_snapshot("preference", {"ranking": [rk], "demonstration": [demo]})
    assert (project.stats()["rankings"], project.stats()["demonstrations"]) == (1, 1)
    assert project.retract("ranking", rk) == "retracted" and project.retract("demonstration", demo) == "retracted"
    stats = project.stats()
    assert (stats["rankings"], stats["demonstrations"]) == (0, 0)  # kept for the snapshot, not counted as live
    assert project.counter_mismatches() == []


def test_a_version_1_file_is_migrated_to_live_counts(project_path: Path) -> None:
    project = Project.create(project_path)
    pid, a, b = _pair(project)
    rk = project.add_ranking(pid, {a: 1, b: 2})
    project.create_snapshot("preference", {"ranking": [rk]})
    project.retract("ranking", rk)
    project.close()
    # Take the file back to version 1 as an older app left it: its counter counted the retracted ranking too.
    conn = sqlite3.connect(project_path)
    from workbench.schema import _counter_sql

    for name in ("ranking_judged", "demonstration_created", "safety_flag_created", "metric_run_key_value"):
        conn.execute(f"DROP INDEX {name}")
    for table in ("ranking", "demonstration"):
        for suffix in ("ins", "del", "upd"):
            conn.execute(f"DROP TRIGGER {table}_count_{suffix}")
    v1_triggers = [s for s in _counter_sql().split(";\n") if s.startswith(("CREATE TRIGGER ranking_count", "CREATE TRIGGER demonstration_count"))]
    for sql in v1_triggers:
        conn.execute(sql)
    conn.execute("UPDATE counter SET n = 1 WHERE key = 'rankings'")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with Project.open(project_path) as p:
        assert p.schema_version == SCHEMA_VERSION
        assert p.stats()["rankings"] == 0 and p.counter_mismatches() == []


def test_checked_nothing_harmful_records_every_category_absent(project: Project) -> None:
    pid, a, b = _pair(project)
    made = project.check_nothing_harmful(pid, a)
    labels = [f for f in project.flags() if f.response_id == a]
    assert sorted(f.category for f in labels) == sorted(c[0] for c in project.categories())
    assert all(not f.present and f.severity is None for f in labels) and sorted(made) == sorted(f.id for f in labels)
    stats = project.stats()
    assert stats["flags"] == 0 and stats["safety_labels"] == len(made)  # negatives, not flags
    assert project.check_nothing_harmful(pid, a) == []  # already recorded: not repeated
    project.add_flag(pid, "violence", "high", response_id=b)
    with pytest.raises(WorkbenchError, match=f"response {b} is flagged as violence"):
        project.check_nothing_harmful(pid, b)
    assert project.retract_all([("flag", i) for i in made]) == ["deleted"] * len(made)
    assert [f.response_id for f in project.flags()] == [b]
