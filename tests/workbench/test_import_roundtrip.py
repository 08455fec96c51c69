"""Our own TRL exports re-import without loss: every pair keeps its prompt, responses, verdict and strength."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.workbench.import_helpers import HH_FILES, hh_identical, read_jsonl
from workbench.importers import import_file
from workbench.messages import canonical_json
from workbench.store import Project

exporters = pytest.importorskip("workbench.exporters")


def _pairs(project: Project) -> set[tuple]:
    return {
        (canonical_json(project.get_prompt(c.prompt_id).messages), project.get_response(c.response_a).content,
         project.get_response(c.response_b).content, c.verdict, c.strength)
        for c in project.comparisons() if c.verdict is not None
    }


def _demos(project: Project) -> set[tuple]:
    return {
        (canonical_json(project.get_prompt(d.prompt_id).messages), project.get_response(d.response_id).content)
        for d in project.demonstrations()
    }


def test_preference_export_reimports_with_strengths_ties_and_both_bad(project, tmp_path):
    conv = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi ’ 你好"}]
    for i, (verdict, strength) in enumerate([("a", "slight"), ("a", "clear"), ("b", "strong"), ("a", None), ("tie", None), ("both_bad", None)]):
        pid, _ = project.add_prompt(conv if i == 0 else [{"role": "user", "content": f"question {i}"}])
        ra, _ = project.add_response(pid, f"answer A{i}")
        rb, _ = project.add_response(pid, f"answer B{i}\nwith two lines")
        project.add_comparison(pid, ra, rb, verdict=verdict, strength=strength, left_side="b")
    out = tmp_path / "prefs.jsonl"
    exporters.export(project, out, "trl-preference", include_ties=True, include_both_bad=True)
    with Project.create(tmp_path / "copy.wbp") as copy:
        report = import_file(copy, out)
        assert report.format == "trl" and not report.skipped
        # A verdict "b" comes back as "a" with the sides swapped (the export writes the winner as chosen).
        def normal(pairs):
            return {(m, b, a, "a", s) if v == "b" else (m, a, b, v, s) for m, a, b, v, s in pairs}
        assert normal(_pairs(copy)) == normal(_pairs(project))


def test_hh_export_reimport_keeps_every_pair(project, tmp_path, test_data):
    path = test_data / HH_FILES["helpful-base"]
    rows = read_jsonl(path)
    import_file(project, path)
    out = tmp_path / "hh.jsonl"
    exporters.export(project, out, "trl-preference")
    with Project.create(tmp_path / "copy.wbp") as copy:
        report = import_file(copy, out)
        assert report.added["comparisons"] == len(rows) - hh_identical(rows)
        assert _pairs(copy) == _pairs(project)


def test_sft_export_reimports(project, tmp_path):
    for i in range(3):
        pid, _ = project.add_prompt([{"role": "user", "content": f"write {i}"}])
        project.add_demonstration(pid, f"written answer {i}")
    out = tmp_path / "sft.jsonl"
    exporters.export(project, out, "trl-sft")
    lines = [json.loads(line) for line in Path(out).read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(lines) == 3
    with Project.create(tmp_path / "copy.wbp") as copy:
        import_file(copy, out)
        assert _demos(copy) == _demos(project)


def test_project_exchange_goes_through_import_file(project, tmp_path):
    """``--format auto`` recognises the exchange header and hands the file to workbench.exchange."""
    pytest.importorskip("workbench.exchange")
    pid, _ = project.add_prompt([{"role": "user", "content": "q"}])
    ra, _ = project.add_response(pid, "a")
    rb, _ = project.add_response(pid, "b")
    project.add_comparison(pid, ra, rb, verdict="b", strength="clear", left_side="a", note="why", time_spent_ms=1200)
    out = tmp_path / "all.jsonl"
    exporters.export(project, out, "project")
    with Project.create(tmp_path / "copy.wbp") as copy:
        report = import_file(copy, out)
        assert report.format == "project"
        (c,) = copy.comparisons()
        assert (c.verdict, c.strength, c.left_side, c.note, c.time_spent_ms) == ("b", "clear", "a", "why", 1200)
