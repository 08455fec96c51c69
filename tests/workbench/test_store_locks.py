"""The store's header check: checking a project file while this process holds an open
connection must not drop its SQLite locks, or a worker process closing its connection deletes the WAL index and
this process stops seeing the worker's writes ("database disk image is malformed")."""

from __future__ import annotations

import os
import subprocess
import sys

from workbench.store import Project, is_project_file


def test_header_check_keeps_the_locks_of_an_open_connection(tmp_path):
    path = tmp_path / "p.wbp"
    Project.create(path).close()
    mine = Project.open(path)
    try:
        code = ("import sys; from workbench.store import Project\n"
                "with Project.open(sys.argv[1]) as p:\n"
                "    for j in range(20): p.add_prompt([{'role': 'user', 'content': sys.argv[2] + str(j)}])\n")
        for i in range(3):
            assert is_project_file(path)  # what Project.open does in the window before each run
            subprocess.run([sys.executable, "-c", code, str(path), f"worker {i} "], check=True, timeout=120)
            assert os.path.exists(str(path) + "-shm")
            assert mine.conn.execute("SELECT COUNT(*) FROM prompt").fetchone()[0] == 20 * (i + 1)
        assert mine.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        mine.close()


def test_header_check_answers_like_the_store(tmp_path):
    path = tmp_path / "p.wbp"
    Project.create(path).close()
    assert is_project_file(path)
    other = tmp_path / "x.txt"
    other.write_text("not a database")
    assert not is_project_file(other)
    assert not is_project_file(tmp_path / "missing.wbp")
    assert not is_project_file(tmp_path)


def test_processes_opening_one_project_at_once_all_open_it_writable(tmp_path):
    """The processes of a multi-process run open the project at the same moment; each one's check that the folder is
    writable must not disturb another's, or a process is told the project is read-only."""
    path = tmp_path / "p.wbp"
    Project.create(path).close()
    code = ("import sys, time\n"
            "from workbench.store import Project\n"
            "start = float(sys.argv[2])\n"
            "time.sleep(max(0.0, start - time.time()))\n"
            "for _ in range(40):\n"
            "    Project.open(sys.argv[1]).close()\n")
    import time

    start = time.time() + 3.0
    workers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(start)], stderr=subprocess.PIPE,
                                text=True) for _ in range(4)]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, "\n".join(errors)
    assert not list(tmp_path.glob(".*probe*"))
