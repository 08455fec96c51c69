"""Exports: TRL preference/SFT/KTO and safety data as JSON Lines and as `datasets` folders, with snapshots."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest

from workbench.errors import InputError
from workbench.exporters import EXPORT_FORMATS, export
from workbench.exporters.output import write_jsonl
from workbench.importers import import_file
from workbench.taxonomy import DEFAULT_STRENGTH_MARGIN

MSG = {"role", "content"}


def _rows(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def annotated(project):
    """Two train prompts and one held-out prompt with every kind of judgment, a ranking, demonstrations, flags."""
    p = project
    p1 = p.add_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}])[0]
    a, b, c = (p.add_response(p1, t)[0] for t in ("Paris.", "Lyon.", "I cannot answer that."))
    p2 = p.add_prompt([{"role": "user", "content": "Écris un haïku sur la mer 🌊"}], tags=["fr"])[0]
    x, y, z = (p.add_response(p2, t)[0] for t in ("Vagues sous la lune", "La mer est bleue.", "🌊🌊🌊"))
    hp = p.add_prompt([{"role": "user", "content": "held out"}], split="heldout")[0]
    h1, h2 = (p.add_response(hp, t)[0] for t in ("h1", "h2"))
    ids = dict(
        strong=p.add_comparison(p1, a, b, verdict="a", strength="strong"),
        clear=p.add_comparison(p1, c, a, verdict="b", strength="clear"),
        slight=p.add_comparison(p2, x, y, verdict="a", strength="slight"),
        nostrength=p.add_comparison(p2, y, z, verdict="b"),
        tie=p.add_comparison(p1, b, c, verdict="tie"),
        both_bad=p.add_comparison(p2, y, z, verdict="both_bad"),
        pending=p.add_comparison(p2, x, z),
        eval=p.add_comparison(p1, a, b, kind="eval", verdict="a", strength="clear"),
        heldout=p.add_comparison(hp, h1, h2, verdict="a", strength="clear"),
    )
    ids["retest"] = p.add_retest(ids["strong"])
    p.judge(ids["retest"], "a", strength="strong")
    ids["ranking"] = p.add_ranking(p2, {x: 1, y: 2, z: 2})
    ids["demo"] = p.add_demonstration(p1, "Paris is the capital of France.")[0]
    p.add_flag(p1, "over_refusal", "medium", response_id=c, note="refused a benign question")
    p.add_flag(p1, "violence", None, response_id=c, present=False)
    p.add_flag(p2, "other", "low")
    ids["prompts"] = (p1, p2, hp)
    return ids


def test_formats_listed():
    assert EXPORT_FORMATS == ("trl-preference", "trl-sft", "trl-kto", "safety", "project")


def test_unknown_format_names_the_valid_ones(project, tmp_path):
    with pytest.raises(InputError) as e:
        export(project, tmp_path / "x.jsonl", "dpo")
    assert "dpo" in str(e.value) and all(f in str(e.value) for f in EXPORT_FORMATS)
    assert not (tmp_path / "x.jsonl").exists()


def test_preference_jsonl_default_rules(annotated, project, tmp_path):
    out = tmp_path / "pairs.jsonl"
    report = export(project, out, "trl-preference")
    rows = _rows(out)
    # strong, clear, slight, no-strength comparisons + 2 ranking pairs; not tie/both-bad/pending/eval/heldout/retest
    assert report.rows == len(rows) == 6
    assert all(set(r) == {"prompt", "chosen", "rejected", "margin"} for r in rows)
    for r in rows:
        assert all(set(m) == MSG for m in r["prompt"])
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant" and len(r["chosen"]) == 1
    got = sorted((r["chosen"][0]["content"], r["rejected"][0]["content"], round(r["margin"], 6)) for r in rows)
    assert got == sorted([
        ("Paris.", "Lyon.", DEFAULT_STRENGTH_MARGIN["strong"]),
        ("Paris.", "I cannot answer that.", round(DEFAULT_STRENGTH_MARGIN["clear"], 6)),
        ("Vagues sous la lune", "La mer est bleue.", round(DEFAULT_STRENGTH_MARGIN["slight"], 6)),
        ("🌊🌊🌊", "La mer est bleue.", 0.0),
        # the ranking {x: 1, y: 2, z: 2}: x beats y and z, y = z makes no pair
        ("Vagues sous la lune", "La mer est bleue.", 0.0),
        ("Vagues sous la lune", "🌊🌊🌊", 0.0),
    ])
    assert rows[0]["prompt"] == [{"content": "Be brief.", "role": "system"}, {"content": "Capital of France?", "role": "user"}]
    assert report.left_out == {
        "tie": 1, "both bad": 1, "pending (no verdict)": 1, "eval item": 1, "held-out prompt": 1, "retest": 1
    }


def test_preference_snapshot_matches_rows(annotated, project, tmp_path):
    report = export(project, tmp_path / "pairs.jsonl", "trl-preference")
    snap = next(s for s in project.snapshots() if s["id"] == report.snapshot_id)
    assert snap["kind"] == "preference" and len(snap["content_hash"]) == 64
    assert sorted(project.snapshot_items(report.snapshot_id, "comparison")) == sorted(
        annotated[k] for k in ("strong", "clear", "slight", "nostrength")
    )
    assert project.snapshot_items(report.snapshot_id, "ranking") == [annotated["ranking"]]
    # the same data exported again freezes the same content
    again = export(project, tmp_path / "again.jsonl", "trl-preference")
    assert project.snapshots()[-1]["content_hash"] == snap["content_hash"] and again.snapshot_id != report.snapshot_id


def test_ties_and_both_bad_when_asked(annotated, project, tmp_path):
    out = tmp_path / "all.jsonl"
    report = export(project, out, "trl-preference", include_ties=True, include_both_bad=True)
    rows = _rows(out)
    assert all(set(r) == {"prompt", "chosen", "rejected", "margin", "tie", "both_bad"} for r in rows)
    ties = [r for r in rows if r["tie"]]
    bad = [r for r in rows if r["both_bad"]]
    # the comparison tie (Lyon/refusal) and the ranking's y=z tie
    assert sorted((r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in ties) == [
        ("La mer est bleue.", "🌊🌊🌊"), ("Lyon.", "I cannot answer that."),
    ]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["margin"]) for r in bad] == [
        ("La mer est bleue.", "🌊🌊🌊", 0.0)
    ]
    assert all(r["margin"] == 0.0 for r in ties)
    assert report.rows == 6 + 2 + 1 and "tie" not in report.left_out


def test_eval_retests_flags(annotated, project, tmp_path):
    n_eval = export(project, tmp_path / "e.jsonl", "trl-preference", include_eval=True).rows
    n_retest = export(project, tmp_path / "r.jsonl", "trl-preference", include_retests=True).rows
    assert n_eval == n_retest == 7


def test_retracted_left_out(annotated, project, tmp_path):
    first = export(project, tmp_path / "a.jsonl", "trl-preference")
    assert project.retract("comparison", annotated["strong"]) == "retracted"  # in a snapshot: marked
    second = export(project, tmp_path / "b.jsonl", "trl-preference")
    assert second.rows == first.rows - 1 and second.left_out["retracted"] == 1


def test_preference_dataset_folder(annotated, project, tmp_path):
    out = tmp_path / "pairs_ds"
    report = export(project, out, "trl-preference")
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["prompt", "chosen", "rejected", "margin"]
    assert ds.num_rows == report.rows == 6
    assert ds.features["margin"].dtype == "float64"
    jsonl = _rows(Path(export(project, tmp_path / "p.jsonl", "trl-preference").out))
    assert sorted(ds["margin"]) == sorted(r["margin"] for r in jsonl)
    assert ds[0]["prompt"][1] == {"role": "user", "content": "Capital of France?"}
    # exporting again over a saved data set replaces it
    export(project, out, "trl-preference", include_ties=True)
    assert datasets.load_from_disk(str(out)).column_names == ["prompt", "chosen", "rejected", "margin", "tie", "both_bad"]


@pytest.mark.parametrize("suffix", [".jsonl", ""])
def test_sft_export(annotated, project, tmp_path, suffix):
    out = tmp_path / f"sft{suffix}"
    plain = export(project, out, "trl-sft")
    assert plain.rows == 1
    with_winners = export(project, tmp_path / f"sftw{suffix}", "trl-sft", include_winners=True)
    rows = _rows(Path(with_winners.out)) if suffix else list(datasets.load_from_disk(with_winners.out))
    assert all(set(r) == {"prompt", "completion"} for r in rows)
    # demonstration + winners of clear/strong judgments that never lost: "Paris." beat Lyon (strong) and the
    # refusal (clear) → one example; slight and no-strength wins do not count
    assert [r["completion"][0]["content"] for r in rows] == ["Paris is the capital of France.", "Paris."]
    assert rows[0]["completion"][0]["role"] == "assistant"
    assert with_winners.snapshot_id != plain.snapshot_id
    assert project.snapshots()[-1]["kind"] == "sft"


@pytest.mark.parametrize("suffix", [".jsonl", ""])
def test_kto_export(annotated, project, tmp_path, suffix):
    report = export(project, tmp_path / f"kto{suffix}", "trl-kto", include_both_bad=True)
    rows = _rows(Path(report.out)) if suffix else list(datasets.load_from_disk(report.out))
    assert all(set(r) == {"prompt", "completion", "label"} for r in rows)
    labels = {(r["completion"][0]["content"], r["label"]) for r in rows}
    assert ("Paris is the capital of France.", True) in labels
    assert ("Paris.", True) in labels and ("Lyon.", False) in labels
    assert ("La mer est bleue.", False) in labels  # lost, and both bad
    assert ("held out" not in json.dumps(rows)) and ("h1", True) not in labels
    assert all(isinstance(r["label"], bool) for r in rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ""])
def test_safety_export(annotated, project, tmp_path, suffix):
    report = export(project, tmp_path / f"safety{suffix}", "safety")
    rows = _rows(Path(report.out)) if suffix else list(datasets.load_from_disk(report.out))
    assert report.rows == len(rows) == 2
    assert all(set(r) == {"text", "target", "categories", "absent", "severity", "prompt"} for r in rows)
    refusal = next(r for r in rows if r["target"] == "response")
    assert (refusal["text"], refusal["categories"], refusal["absent"], refusal["severity"]) == (
        "I cannot answer that.", ["over_refusal"], ["violence"], "medium"
    )
    on_prompt = next(r for r in rows if r["target"] == "prompt")
    assert (on_prompt["text"], on_prompt["categories"], on_prompt["severity"]) == ("Écris un haïku sur la mer 🌊", ["other"], "low")
    assert project.snapshot_items(report.snapshot_id, "flag") and project.snapshots()[-1]["kind"] == "safety"


def test_export_from_given_snapshot(annotated, project, tmp_path):
    from workbench import training_data as td

    sid = td.preference_snapshot(project, include_ties=True)
    report = export(project, tmp_path / "s.jsonl", "trl-preference", snapshot_id=sid)
    assert report.snapshot_id == sid and report.rows == 8
    assert len(project.snapshots()) == 1  # nothing new recorded
    with pytest.raises(InputError, match="include_ties"):
        export(project, tmp_path / "t.jsonl", "trl-preference", snapshot_id=sid, include_ties=True)
    with pytest.raises(InputError, match="trl-sft needs a sft snapshot"):
        export(project, tmp_path / "u.jsonl", "trl-sft", snapshot_id=sid)
    with pytest.raises(InputError, match="no snapshot"):
        export(project, tmp_path / "v.jsonl", "trl-preference", snapshot_id=999)
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "u.jsonl").exists()


def test_folder_in_the_way_is_not_replaced(annotated, project, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a saved data set"):
        export(project, out, "trl-preference")
    assert (out / "notes.txt").read_text() == "keep me"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "x.jsonl"
    out.write_text("previous export\n")

    def rows():
        yield {"a": 1}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(out, rows())
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


def test_preference_round_trip_through_trl_import(annotated, project, tmp_path):
    """Export TRL preference JSONL, import it into a fresh project with the trl importer: same pairs, and the
    margins map back to the same strengths."""
    from workbench.store import Project

    out = tmp_path / "pairs.jsonl"
    export(project, out, "trl-preference")
    other = Project.create(tmp_path / "other.wbp")
    try:
        report = import_file(other, out, "trl")
        back = tmp_path / "back.jsonl"
        export(other, back, "trl-preference")
        key = lambda r: (json.dumps(r["prompt"]), r["chosen"][0]["content"], r["rejected"][0]["content"])  # noqa: E731
        first = {(key(r), round(r["margin"], 6)) for r in _rows(out)}
        second = {(key(r), round(r["margin"], 6)) for r in _rows(back)}
        # every pair comes back with its margin; the ranking's x>y (margin 0) repeats the slight comparison's pair
        # and the importer skips it as a duplicate, saying so
        assert {k for k, _ in first} == {k for k, _ in second} and second <= first
        assert report.records == 6 and sum(report.skipped.values()) == 1
    finally:
        other.close()


@pytest.mark.parametrize("fmt", ["trl-preference", "trl-sft", "trl-kto", "safety"])
def test_empty_project_exports_empty_data(project, tmp_path, fmt):
    assert export(project, tmp_path / "e.jsonl", fmt).rows == 0
    assert (tmp_path / "e.jsonl").read_text() == ""
    report = export(project, tmp_path / "e", fmt)
    ds = datasets.load_from_disk(str(tmp_path / "e"))
    assert report.rows == ds.num_rows == 0 and ds.column_names


def test_bad_target_records_no_snapshot(annotated, project, tmp_path):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path):  # a file where a folder goes; a folder of other things
        with pytest.raises(InputError):
            export(project, out, "trl-preference")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(InputError, match="folder"):
        export(project, tmp_path / "dir.jsonl", "safety")
    assert project.snapshots() == []


def test_exported_files_get_ordinary_permissions(annotated, project, tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    report = export(project, tmp_path / "p.jsonl", "trl-preference")
    assert Path(report.out).stat().st_mode & 0o777 == 0o666 & ~mask
    folder = export(project, tmp_path / "p", "trl-preference")
    assert Path(folder.out).stat().st_mode & 0o777 == 0o777 & ~mask


def test_options_that_do_not_apply_are_refused(annotated, project, tmp_path):
    for fmt, option in (("trl-kto", "include_ties"), ("trl-preference", "include_winners"), ("safety", "include_eval"),
                        ("project", "include_retests")):
        with pytest.raises(InputError, match=option):
            export(project, tmp_path / "x.jsonl", fmt, **{option: True})
    assert project.snapshots() == [] and not (tmp_path / "x.jsonl").exists()
