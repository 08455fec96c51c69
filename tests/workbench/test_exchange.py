"""The lossless project exchange: export → import → export is identical; merging dedupes; bad files are refused."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from workbench import training_data as td
from workbench.errors import InputError
from workbench.exchange import FORMAT, export_project, import_project, read_header
from workbench.exporters import export
from workbench.importers import import_file
from workbench.store import Project


def _body(path: Path) -> list[dict]:
    """Every record after the header (the header carries the export time)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = [json.loads(x) for x in f]
    return lines[1:]


def _fill(p: Project) -> dict:
    """A project using every table and field the exchange must carry."""
    p.set_guideline("Version two of the guideline.")
    p.add_category("jailbreak", "Jailbreak attempt", "Tries to get around the rules.")
    p1 = p.add_prompt(
        [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Name a prime."},
         {"role": "assistant", "content": "2"}, {"role": "user", "content": "Another?"}],
        source="hand", tags=["math", "multi-turn"], created_at="2025-01-02T03:04:05.678+00:00",
    )[0]
    p2 = p.add_prompt([{"role": "user", "content": "مرحبا، كيف حالك؟ 你好"}], split="heldout", source="hand")[0]
    a = p.add_response(p1, "3", origin="model", model="SmolLM2", adapter="run-7", sampling={"temperature": 0.7, "top_p": 0.9}, seed=11)[0]
    b = p.add_response(p1, "4 is prime.", origin="imported", source="hh")[0]
    c = p.add_response(p1, "5")[0]
    d = p.add_response(p2, "بخير، شكرا")[0]
    e = p.add_response(p2, "我很好")[0]
    c1 = p.add_comparison(p1, a, b, verdict="a", strength="strong", left_side="b",
                          criteria={"helpfulness": "a", "honesty": "a", "harmlessness": "tie"},
                          note="b is false", time_spent_ms=4200, guideline_version=1, source="desk")
    retest = p.add_retest(c1)
    p.judge(retest, "b", strength="slight", left_side="a", time_spent_ms=900)
    p.add_comparison(p1, b, c, kind="eval")  # pending eval item
    c4 = p.add_comparison(p2, d, e, verdict="tie", note="both fine")
    p.create_snapshot("preference", {"comparison": [c4]})
    p.undo_judgment(c4)  # in a snapshot → retracted + a fresh pending copy
    rk = p.add_ranking(p1, {a: 1, b: 3, c: 2}, note="ranked", time_spent_ms=100)
    p.add_ranking(p1, {a: 1, c: 1}, retest_of=rk)
    p.add_demonstration(p1, "7", edited_from=c, note="fixed", time_spent_ms=3000)
    demo2 = p.add_demonstration(p2, "أنا بخير")[0]
    p.create_snapshot("sft", {"demonstration": [demo2]})
    p.retract("demonstration", demo2)
    p.add_flag(p1, "jailbreak", "high", response_id=b, note="custom category")
    p.add_flag(p1, "misinformation", "medium", response_id=b, note="4 is not prime")
    p.add_flag(p1, "violence", None, response_id=b, present=False)
    p.add_flag(p2, "privacy", "low", note="on the prompt")
    return {"c1": c1, "retest": retest, "rk": rk}


def test_round_trip_is_identical(project, tmp_path):
    _fill(project)
    first = tmp_path / "a.jsonl"
    report = export_project(project, first)
    assert report.rows == len(_body(first))
    fresh = Project.create(tmp_path / "fresh.wbp")
    try:
        imported = import_project(fresh, first)
        assert imported.skipped == {}
        assert imported.records == report.rows
        second = tmp_path / "b.jsonl"
        export_project(fresh, second)
        assert _body(first) == _body(second)
        assert fresh.stats()["verdicts"] == project.stats()["verdicts"]
        # retest links point at the imported originals
        links = [(fresh.get_comparison(r.retest_of), r) for r in fresh.comparisons() if r.retest_of is not None]
        assert [(o.verdict, o.strength, r.verdict) for o, r in links] == [("a", "strong", "b")]
        ranking_links = [fresh.ranking_retest_of(k) for k in fresh.ranking_ids()]
        assert [k for k in ranking_links if k is not None] == [1]
    finally:
        fresh.close()


def test_header_and_records(project, tmp_path):
    _fill(project)
    out = tmp_path / "p.jsonl"
    export_project(project, out)
    header = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert header["format"] == FORMAT and header["version"] == 1
    assert header["counts"]["comparison"] == 5 and header["counts"]["flag"] == 4
    assert read_header(out)["counts"] == header["counts"]
    body = _body(out)
    comparison = next(r for r in body if r["type"] == "comparison")
    assert {k: comparison[k] for k in ("left_side", "verdict", "strength", "note", "time_spent_ms", "kind", "guideline_version")} == {
        "left_side": "b", "verdict": "a", "strength": "strong", "note": "b is false", "time_spent_ms": 4200,
        "kind": "train", "guideline_version": 1,
    }
    assert comparison["criteria"] == {"helpfulness": "a", "honesty": "a", "harmlessness": "tie"}
    retest = next(r for r in body if r["type"] == "comparison" and r["retest_of"])
    assert retest["retest_of"] == comparison["key"]
    assert "id" not in comparison and all(isinstance(comparison[k], str) for k in ("prompt", "a", "b"))
    response = next(r for r in body if r["type"] == "response" and r["origin"] == "model")
    assert (response["model"], response["adapter"], response["sampling"], response["seed"]) == (
        "SmolLM2", "run-7", {"temperature": 0.7, "top_p": 0.9}, 11
    )
    flag = next(r for r in body if r["type"] == "flag" and r["present"] is False)
    assert flag["category"] == "violence" and flag["severity"] is None
    assert [r["version"] for r in body if r["type"] == "guideline"] == [1, 2]
    assert any(r["type"] == "category" and r["key"] == "jailbreak" and not r["builtin"] for r in body)


def test_project_export_records_a_snapshot(project, tmp_path):
    _fill(project)
    r1 = export_project(project, tmp_path / "a.jsonl")
    r2 = export(project, tmp_path / "b.jsonl.gz", "project")
    snaps = {s["id"]: s for s in project.snapshots()}
    assert snaps[r1.snapshot_id]["kind"] == snaps[r2.snapshot_id]["kind"] == "project"
    # the hash covers the records (not the header's time), so equal content gives an equal hash
    assert snaps[r1.snapshot_id]["content_hash"] == snaps[r2.snapshot_id]["content_hash"]
    lines = (tmp_path / "a.jsonl").read_bytes().split(b"\n", 1)[1]
    assert hashlib.sha256(lines).hexdigest() == snaps[r1.snapshot_id]["content_hash"]
    assert _body(tmp_path / "a.jsonl") == _body(tmp_path / "b.jsonl.gz")
    # no item rows: exporting the project must not turn later undos into retractions
    assert project.snapshot_items(r1.snapshot_id, "comparison") == []
    with pytest.raises(InputError, match=r"\.jsonl"):
        export(project, tmp_path / "folder", "project")


def test_import_twice_adds_nothing(project, tmp_path):
    _fill(project)
    out = tmp_path / "a.jsonl"
    export_project(project, out)
    before = project.stats()
    report = import_project(project, out)
    assert sum(report.added.values()) == 0
    assert report.skipped["comparison already in the project"] == 5
    assert report.skipped["response already in the project"] == 7
    assert project.stats() == {**before, "snapshots": before["snapshots"]}


def test_merge_dedupes_and_fills_pending(tmp_path):
    """Two projects built from the same generated candidates: one judged half, the other judged the rest."""
    def base(path):
        p = Project.create(path)
        pid = p.add_prompt([{"role": "user", "content": "Pick the better answer"}], created_at="2025-01-01T00:00:00.000+00:00")[0]
        rs = [p.add_response(pid, t, created_at="2025-01-01T00:00:00.000+00:00")[0] for t in ("r0", "r1", "r2", "r3")]
        return p, pid, rs

    a, pa, ra = base(tmp_path / "a.wbp")
    b, pb, rb = base(tmp_path / "b.wbp")
    stamp = "2025-01-01T00:00:01.000+00:00"
    # the same queued pairs (same creation time: handed out from one generation run)
    qa = [a.add_comparison(pa, ra[i], ra[j], created_at=stamp) for i, j in ((0, 1), (2, 3))]
    qb = [b.add_comparison(pb, rb[i], rb[j], created_at=stamp) for i, j in ((0, 1), (2, 3))]
    a.judge(qa[0], "a", strength="clear")
    b.judge(qb[1], "b", strength="slight")
    # B also has an independent judgment that A already has (same pair, verdict, strength, source)
    a.add_comparison(pa, ra[0], ra[2], verdict="a", strength="strong", source="hh")
    b.add_comparison(pb, rb[2], rb[0], verdict="b", strength="strong", source="hh")  # flipped sides
    b.add_comparison(pb, rb[1], rb[3], verdict="a", strength="strong", source="hh")  # new to A
    b.add_flag(pb, "other", "low", response_id=rb[3])
    b.add_flag(pb, "other", "low", response_id=rb[3])  # a second identical label in B itself: kept
    try:
        out = tmp_path / "b.jsonl"
        export_project(b, out)
        report = import_project(a, out)
        assert report.added["judgments of pending comparisons"] == 1
        assert report.skipped["comparison already in the project"] == 1  # qb[0]: pending there, judged here
        assert report.skipped["duplicate of a judgment already in the project"] == 1
        assert report.added["comparisons"] == 1
        assert report.added["flags"] == 2
        rows = [(c.response_a, c.response_b, c.verdict, c.strength) for c in a.comparisons()]
        assert rows == [
            (ra[0], ra[1], "a", "clear"), (ra[2], ra[3], "b", "slight"), (ra[0], ra[2], "a", "strong"),
            (ra[1], ra[3], "a", "strong"),
        ]
        assert a.pending_count() == 0
    finally:
        a.close()
        b.close()


def test_guidelines_and_categories_remapped(tmp_path):
    src = Project.create(tmp_path / "src.wbp")
    dst = Project.create(tmp_path / "dst.wbp")
    try:
        src.set_guideline("source v2")
        src.add_category("jailbreak", "Jailbreak")
        pid = src.add_prompt([{"role": "user", "content": "q"}])[0]
        r1, r2 = (src.add_response(pid, t)[0] for t in ("x", "y"))
        src.add_comparison(pid, r1, r2, verdict="a")  # guideline v2
        src.add_flag(pid, "jailbreak", "low", response_id=r1)
        dst.set_guideline("destination v2")
        dst.add_category("jailbreak", "Jail-break (ours)")
        out = tmp_path / "src.jsonl"
        export_project(src, out)
        report = import_project(dst, out)
        assert [v for v, _, _ in dst.guideline_versions()] == [1, 2, 3]
        assert dst.guideline_versions()[2][2] == "source v2"
        assert [c.guideline_version for c in dst.comparisons()] == [3]
        assert {k: label for k, label, _, _ in dst.categories()}["jailbreak"] == "Jail-break (ours)"
        assert report.skipped["category already in the project with another label (kept the project's)"] == 1
    finally:
        src.close()
        dst.close()


def test_importers_dispatch_project_format(project, tmp_path):
    _fill(project)
    out = tmp_path / "a.jsonl.gz"
    export_project(project, out)
    fresh = Project.create(tmp_path / "fresh.wbp")
    try:
        report = import_file(fresh, out)  # --format auto recognises the header
        assert report.format == "project" and report.added["comparisons"] == 5
    finally:
        fresh.close()


# ---------------------------------------------------------------------------------------------- bad input
def _good_file(tmp_path: Path) -> Path:
    src = Project.create(tmp_path / "src.wbp")
    try:
        _fill(src)
        out = tmp_path / "good.jsonl"
        export_project(src, out)
    finally:
        src.close()
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _edit(lines: list[str], kind: str, **changes) -> tuple[list[str], int]:
    """Change the first record of ``kind``; returns the lines and that record's 1-based line number."""
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec.get("type") == kind:
            for k, v in changes.items():
                if v is _DROP:
                    rec.pop(k)
                else:
                    rec[k] = v
            lines = [*lines[:i], json.dumps(rec, ensure_ascii=False), *lines[i + 1:]]
            return lines, i + 1
    raise AssertionError(kind)


_DROP = object()


def _bad_cases(good: Path) -> list[tuple[str, list[str] | bytes, int | None, str | None]]:
    lines = _lines(good)
    n = len(lines)
    cases: list = []
    cases.append(("malformed JSON", [*lines[:5], '{"type": "prompt", ', *lines[6:]], 6, None))
    cases.append(("not a project file", [json.dumps({"format": "something-else", "version": 1}), *lines[1:]], 1, "format"))
    cases.append(("newer version", [json.dumps({"format": FORMAT, "version": 99}), *lines[1:]], 1, "version"))
    cases.append(("unknown type", [*lines, json.dumps({"type": "mystery"})], n + 1, "type"))
    bad, ln = _edit(lines, "comparison", verdict="maybe")
    cases.append(("bad verdict", bad, ln, "verdict"))
    bad, ln = _edit(lines, "comparison", strength="strong", verdict="tie")
    cases.append(("strength on a tie", bad, ln, "strength"))
    bad, ln = _edit(lines, "comparison", prompt="0" * 64)
    cases.append(("unknown prompt", bad, ln, "prompt"))
    bad, ln = _edit(lines, "response", hash="f" * 64)
    cases.append(("hash mismatch", bad, ln, "hash"))
    bad, ln = _edit(lines, "prompt", messages=[{"role": "robot", "content": "hi"}])
    cases.append(("bad role", bad, ln, "messages[0].role"))
    bad, ln = _edit(lines, "response", created_at=_DROP)
    cases.append(("missing field", bad, ln, "created_at"))
    bad, ln = _edit(lines, "flag", category="nonexistent")
    cases.append(("unknown category", bad, ln, "category"))
    bad, ln = _edit(lines, "response", content="x" * (10 * 1024 * 1024), hash=_DROP)
    cases.append(("10 MB record", bad, ln, "content"))
    bad, ln = _edit(lines, "comparison", judged_at="last tuesday")
    cases.append(("not a timestamp", bad, ln, "judged_at"))
    bad, ln = _edit(lines, "prompt", created_at="2025-01-02T03:04:05")
    cases.append(("timestamp without an offset", bad, ln, "created_at"))
    bad, ln = _edit(lines, "response", seed=2**70)
    cases.append(("seed beyond 64 bits", bad, ln, "seed"))
    bad, ln = _edit(lines, "comparison", time_spent_ms=2**63)
    cases.append(("time spent beyond 64 bits", bad, ln, "time_spent_ms"))
    rk = next(json.loads(x) for x in lines if json.loads(x).get("type") == "ranking")
    bad, ln = _edit(lines, "ranking", entries=[[rk["entries"][0][0], 2**64], *rk["entries"][1:]])
    cases.append(("rank beyond 64 bits", bad, ln, "entries[0]"))
    cases.append(("cut short", lines[:-3], n - 3, None))
    raw = ("\n".join(lines[:3]) + "\n").encode() + b'{"type": "prompt", "x": "\xff\xfe"}\n'
    cases.append(("non-UTF-8", raw, 4, None))
    cases.append(("empty", b"", None, None))
    return cases


def test_bad_input_names_place_and_changes_nothing(tmp_path):
    good = _good_file(tmp_path)
    target_path = tmp_path / "target.wbp"
    target = Project.create(target_path)
    pid = target.add_prompt([{"role": "user", "content": "already here"}])[0]
    target.add_response(pid, "answer")
    target.close()
    before = target_path.read_bytes()
    for name, content, line, field in _bad_cases(good):
        bad = tmp_path / "bad.jsonl"
        if isinstance(content, bytes):
            bad.write_bytes(content)
        else:
            _write(bad, content)
        project = Project.open(target_path)
        dump = list(project.conn.iterdump())
        try:
            with pytest.raises(InputError) as e:
                import_project(project, bad)
            assert e.value.path == str(bad), name
            assert e.value.line == line, (name, str(e.value))
            if field:
                assert e.value.field == field, (name, str(e.value))
            assert str(bad) in str(e.value)
            assert list(project.conn.iterdump()) == dump, name
        finally:
            project.close()
        assert target_path.read_bytes() == before, name


def test_size_cap_is_configurable(tmp_path):
    good = _good_file(tmp_path)
    fresh = Project.create(tmp_path / "fresh.wbp")
    try:
        with pytest.raises(InputError, match="size cap") as e:
            import_project(fresh, good, max_chars=10)
        assert e.value.line is not None
        assert fresh.stats()["prompts"] == 0
    finally:
        fresh.close()


def test_existing_prompt_gains_tags_and_heldout_wins_the_split(tmp_path):
    """A prompt held out on either side ends up held out: nothing the source kept out of training enters it."""
    src = Project.create(tmp_path / "src.wbp")
    dst = Project.create(tmp_path / "dst.wbp")
    try:
        src.add_prompt([{"role": "user", "content": "shared"}], split="heldout", tags=["from-src"])
        src.add_prompt([{"role": "user", "content": "mine is held out"}], split="train")
        a, _ = src.add_prompt([{"role": "user", "content": "both train"}], split="train")
        dst.add_prompt([{"role": "user", "content": "shared"}], tags=["mine"])
        dst.add_prompt([{"role": "user", "content": "mine is held out"}], split="heldout")
        dst.add_prompt([{"role": "user", "content": "both train"}], split="train")
        r1, _ = src.add_response(1, "x")
        r2, _ = src.add_response(1, "y")
        src.add_comparison(1, r1, r2, verdict="a", strength="clear")
        export_project(src, tmp_path / "src.jsonl")
        report = import_project(dst, tmp_path / "src.jsonl")
        assert report.added["prompts moved to the held-out set"] == 1
        assert report.skipped["prompt already in the project as heldout (kept its split, not train)"] == 1
        assert report.skipped["prompt already in the project"] == 1
        assert report.added["prompt tags"] == 1
        splits = {dst.get_prompt(i).title: dst.get_prompt(i).split for i in (1, 2, 3)}
        assert splits == {"shared": "heldout", "mine is held out": "heldout", "both train": "train"}
        assert dst.get_prompt(1).tags == ["from-src", "mine"]
        assert dst.stats()["heldout_prompts"] == 2
        # The source's held-out judgment does not reach a training selection in the target.
        assert td.select_preference_items(dst) == {"comparison": [], "ranking": []}
    finally:
        src.close()
        dst.close()
