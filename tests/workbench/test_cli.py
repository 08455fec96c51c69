"""The `workbench` command, run as a user runs it (a subprocess): exit codes, one clear message, files untouched."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

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
