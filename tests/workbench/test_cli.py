"""The `workbench` command, run as a user runs it (a subprocess): exit codes, one clear message, files untouched."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.workbench.import_helpers import read_jsonl
from workbench.schema import SCHEMA_VERSION


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_then_stats_json_has_integer_counts(tmp_path: Path) -> None:
    path = tmp_path / "p.wbp"
    assert run_cli("init", path).returncode == 0
    out = run_cli("stats", path, "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    for key in ("prompts", "responses", "comparisons", "rankings", "demonstrations", "flags"):
        assert stats[key] == 0 and isinstance(stats[key], int)
    assert set(stats["verdicts"]) >= {"a", "b", "tie", "both_bad"} and isinstance(stats["flag_categories"], dict)


def test_init_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "p.wbp"
    path.write_text("mine")
    out = run_cli("init", path)
    assert out.returncode != 0 and str(path) in out.stderr and path.read_text() == "mine"


def test_stats_on_a_file_that_is_not_a_project(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    before = digest(path)
    out = run_cli("stats", path)
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and str(path) in out.stderr and "not an RLHF Workbench project" in out.stderr
    assert digest(path) == before


def test_stats_on_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.wbp"
    assert run_cli("init", path).returncode == 0
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    conn.close()
    before = digest(path)
    out = run_cli("stats", path)
    assert out.returncode != 0 and "newer" in out.stderr and str(path) in out.stderr
    assert digest(path) == before


def test_import_bad_line_names_file_and_line_and_leaves_project_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "p.wbp"
    assert run_cli("init", path).returncode == 0
    data = tmp_path / "prefs.jsonl"
    good = json.dumps({"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."})
    data.write_text(good + "\n" + good.replace("Hello", "Hey") + "\n{not json\n")
    before = digest(path)
    out = run_cli("import", path, data)
    assert out.returncode != 0
    assert str(data) in out.stderr and "line 3" in out.stderr
    assert digest(path) == before
    assert json.loads(run_cli("stats", path, "--json").stdout)["comparisons"] == 0


def test_import_then_export_round_trip_through_the_cli(tmp_path: Path, test_data: Path) -> None:
    path = tmp_path / "p.wbp"
    assert run_cli("init", path).returncode == 0
    src = test_data / "anthropic-hh-rlhf" / "helpful-base" / "test.jsonl.gz"
    out = run_cli("import", path, src, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["added"]["comparisons"] + report["skipped_total"] == len(read_jsonl(src))
    exported = tmp_path / "prefs.jsonl"
    out = run_cli("export", path, exported, "--format", "trl-preference")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(rows) == report["added"]["comparisons"]
    assert {"prompt", "chosen", "rejected", "margin"} <= set(rows[0])
    other = tmp_path / "q.wbp"
    assert run_cli("init", other).returncode == 0
    assert run_cli("import", other, exported).returncode == 0
    assert json.loads(run_cli("stats", other, "--json").stdout)["comparisons"] == len(rows)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.wbp"
    assert run_cli("init", path).returncode == 0
    data = tmp_path / "x.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    out = run_cli("import", path, data, "--format", "yaml")
    assert out.returncode != 0 and "yaml" in out.stderr
    out = run_cli("export", path, tmp_path / "o.jsonl", "--format", "parquet")
    assert out.returncode != 0 and "parquet" in out.stderr
