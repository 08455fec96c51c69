"""A full disk during a judgment and during an import: a clear message, and the project exactly as it was.

The full disk is SQLite's own: ``PRAGMA max_page_count`` caps the file at its current size, so the next page a
write needs fails with SQLITE_FULL, as it does when the disk has no room left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import DiskFullError
from workbench.importers import import_file
from workbench.store import Project


def fill_disk(project: Project) -> None:
    pages = project.conn.execute("PRAGMA page_count").fetchone()[0]
    project.conn.execute(f"PRAGMA max_page_count = {pages}")


def state(project: Project) -> dict:
    return {**project.stats(), "snapshots": project.snapshots(), "integrity": project.integrity_problems()}


def _pair(project: Project, text: str = "x" * 3000) -> tuple[int, int]:
    pid, _ = project.add_prompt([{"role": "user", "content": "Which is better?"}])
    a, _ = project.add_response(pid, "A " + text)
    b, _ = project.add_response(pid, "B " + text)
    return pid, project.add_comparison(pid, a, b)


def test_a_judgment_on_a_full_disk_says_so_and_saves_nothing(project: Project) -> None:
    _, cid = _pair(project)
    # Room for the pages that exist, none for the new ones a judgment with a long note would need.
    fill_disk(project)
    before = state(project)
    with pytest.raises(DiskFullError, match="the disk is full.*nothing of this change was saved"):
        project.judge(cid, "a", strength="clear", left_side="a", note="n" * 20000)
    assert state(project) == before and project.get_comparison(cid).verdict is None
    project.conn.execute("PRAGMA max_page_count = 1073741823")  # space freed: the same judgment goes in
    project.judge(cid, "a", strength="clear", left_side="a", note="n" * 20000)
    assert project.get_comparison(cid).verdict == "a"


def test_an_import_on_a_full_disk_leaves_the_project_unchanged(project: Project, tmp_path: Path) -> None:
    _pair(project)
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": "An answer. " * 50}) + "\n"
                            for i in range(500)))
    fill_disk(project)
    before = state(project)
    with pytest.raises(DiskFullError, match=str(project.path)):
        import_file(project, data, "trl")
    assert state(project) == before


def test_the_cli_names_a_full_disk_in_one_line(tmp_path: Path) -> None:
    # The command runs in its own process: its connections are capped there, before the CLI runs as a user runs it.
    path = tmp_path / "p.wbp"
    Project.create(path).close()
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Q?", "completion": "A. " * 3000}) + "\n")
    code = (
        "import sys\n"
        "from workbench import cli\n"
        "from workbench.store import connection\n"
        "real = connection._connect\n"
        "def capped(path):\n"
        "    conn = real(path)\n"
        "    conn.execute('PRAGMA max_page_count = ' + str(conn.execute('PRAGMA page_count').fetchone()[0]))\n"
        "    return conn\n"
        "connection._connect = capped\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "import", str(path), str(data), "--no-backup"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "the disk is full" in done.stderr
    with Project.open(path) as p:
        assert p.stats()["prompts"] == 0
