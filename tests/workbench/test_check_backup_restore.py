"""`workbench check`, `backup` and `restore`, run as a user runs them (subprocesses), on real project files that
were damaged the ways disks and people damage them: random bytes in the middle, a truncated file, counters out of
step, a run folder deleted, a snapshot's rows changed; and the opening of a damaged or read-only file."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from workbench.backups import back_up, list_backups, prune
from workbench.errors import DamagedProjectError, NotAProjectError, ReadOnlyProjectError
from workbench.paths import backups_dir, runs_dir
from workbench.schema import SCHEMA_VERSION
from workbench.store import Project


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_project(path: Path, n: int = 40) -> Path:
    """A project with prompts, judged and pending comparisons, a demonstration and a flag."""
    with Project.create(path) as p:
        for i in range(n):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Question {i}: " + "words " * 30}], tags=[f"t{i % 3}"])
            a, _ = p.add_response(pid, f"Answer A {i} " + "text " * 40)
            b, _ = p.add_response(pid, f"Answer B {i} " + "text " * 40)
            cid = p.add_comparison(pid, a, b)
            if i % 2:
                p.judge(cid, "a", strength="clear", left_side="a")
            if i % 7 == 0:
                p.add_demonstration(pid, f"Ideal answer {i}")
                p.add_flag(pid, "violence", "low", response_id=b)
    return path


def overwrite_middle(path: Path) -> None:
    n = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(n // 2)
        f.write(os.urandom(4096))


# ---------------------------------------------------------------------------------------------- check
def test_check_a_sound_project(tmp_path):
    path = make_project(tmp_path / "p.wbp")
    out = run_cli("check", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == f"{path}: ok (integrity, foreign keys, counters, run folders and snapshots checked)"
    data = json.loads(run_cli("check", path, "--json").stdout)
    assert data["ok"] is True and data["problems"] == []


def test_random_bytes_in_the_middle_are_found_and_the_file_is_left_alone(tmp_path):
    path = make_project(tmp_path / "p.wbp")
    with Project.open(path) as p:
        back_up(p, "manual")
    overwrite_middle(path)
    before = digest(path)
    out = run_cli("check", path)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"{path}: damaged:") and len(lines) >= 3
    assert all(line.startswith(("- ", "the newest backup is")) for line in lines[1:])
    assert "workbench restore" in lines[-1] and str(list_backups(path)[0].path) in lines[-1]
    assert digest(path) == before
    report = json.loads(run_cli("check", path, "--json").stdout)
    assert not report["ok"] and {p["kind"] for p in report["problems"]} >= {"file"}


def test_a_truncated_project_is_called_damaged_not_a_stranger(tmp_path):
    path = make_project(tmp_path / "p.wbp", n=120)
    with Project.open(path) as p:
        newest = back_up(p, "manual")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)
    for cmd in (("stats",), ("check",), ("export", tmp_path / "out.jsonl", "--format", "project")):
        out = run_cli(cmd[0], path, *cmd[1:])
        assert out.returncode != 0
        text = out.stdout + out.stderr
        assert "damaged" in text and "not an RLHF Workbench project" not in text, text
        assert str(newest.path) in text
    with pytest.raises(DamagedProjectError, match="damaged project file"):
        Project.open(path)


def test_an_overwritten_header_is_damaged_when_it_was_a_project(tmp_path):
    path = make_project(tmp_path / "p.wbp")
    with Project.open(path) as p:
        back_up(p)
    with open(path, "r+b") as f:
        f.write(os.urandom(100))
    with pytest.raises(DamagedProjectError, match="damaged"):
        Project.open(path)
    stranger = tmp_path / "notes.wbp"
    stranger.write_bytes(os.urandom(3000))
    with pytest.raises(NotAProjectError, match="not an RLHF Workbench project"):
        Project.open(stranger)


def test_counters_out_of_step_are_reported_then_repaired(tmp_path):
    path = make_project(tmp_path / "p.wbp")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE counter SET n = n + 7 WHERE key = 'comparisons'")
    conn.execute("DELETE FROM counter WHERE key = 'verdict:a'")
    conn.commit()
    conn.close()
    out = run_cli("check", path)
    assert out.returncode == 1
    assert "counter 'comparisons' says 47 but the project holds 40" in out.stdout
    assert "counter 'verdict:a' says missing but the project holds 20" in out.stdout
    fixed = run_cli("check", path, "--repair")
    assert "repaired: 2 counters recounted from the rows" in fixed.stdout
    assert run_cli("check", path).returncode == 0
    stats = json.loads(run_cli("stats", path, "--json").stdout)
    assert stats["comparisons"] == 40 and stats["verdicts"]["a"] == 20


def test_a_missing_run_folder_and_adapter_are_found_and_marked(tmp_path):
    path = make_project(tmp_path / "p.wbp")
    with Project.open(path) as p:
        gone = p.create_run("sft", {"lr": 1e-4})
        p.update_run(gone, status="done", output_dir=str(runs_dir(path) / str(gone)))
        hollow = p.create_run("rm", {})
        (runs_dir(path) / str(hollow)).mkdir(parents=True)
        p.update_run(hollow, status="done", output_dir=str(runs_dir(path) / str(hollow)))
        fine = p.create_run("sft", {})
        (runs_dir(path) / str(fine) / "adapter").mkdir(parents=True)
        (runs_dir(path) / str(fine) / "adapter" / "adapter_config.json").write_text("{}")
        p.update_run(fine, status="done", output_dir=str(runs_dir(path) / str(fine)))
    out = run_cli("check", path)
    assert out.returncode == 1
    assert f"run {gone} (sft, done): its folder" in out.stdout and f"run {hollow} (rm, done): its adapter" in out.stdout
    assert f"run {fine} " not in out.stdout
    fixed = run_cli("check", path, "--repair")
    assert f"repaired: run {gone} marked as missing its files" in fixed.stdout
    assert run_cli("check", path).returncode == 0
    with Project.open(path) as p:
        assert p.get_run(gone)["error"].startswith("missing: ") and p.get_run(fine)["error"] is None


def test_a_snapshot_whose_rows_changed_is_reported_and_not_repaired(tmp_path):
    path = make_project(tmp_path / "p.wbp")
    with Project.open(path) as p:
        judged = [c for c in range(1, 41) if p.get_comparison(c).verdict]
        sid = p.create_snapshot("preference", {"comparison": judged})
    conn = sqlite3.connect(path)
    conn.execute("UPDATE comparison SET verdict = 'b' WHERE id = ?", (judged[0],))
    conn.commit()
    conn.close()
    out = run_cli("check", path, "--repair")
    assert out.returncode == 1
    assert f"snapshot {sid} (preference) no longer matches its content hash" in out.stdout
    assert f"not repaired: snapshot {sid} (preference): the rows it froze cannot be brought back" in out.stdout


@pytest.mark.parametrize("command", ["check", "backup", "restore"])
def test_bad_input_is_one_clear_line_and_changes_nothing(tmp_path, command):
    good = make_project(tmp_path / "good.wbp", n=3)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    newer = make_project(tmp_path / "newer.wbp", n=3)
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    cases = [(tmp_path / "missing.wbp", "no such"), (text, "not an RLHF Workbench project"), (newer, "newer")]
    for target, words in cases:
        before = {p: digest(p) for p in (good, text, newer)}
        args = {"check": (target,), "backup": (target, tmp_path / "copy.wbp"), "restore": (target, good)}[command]
        out = run_cli(command, *args)
        assert out.returncode not in (0, 1) if command == "check" else out.returncode != 0, out.stdout
        assert out.stderr.count("\n") == 1 and words in out.stderr and str(target) in out.stderr, out.stderr
        assert {p: digest(p) for p in (good, text, newer)} == before
        assert not (tmp_path / "copy.wbp").exists()
        assert not list(tmp_path.glob("good.wbp.replaced-*"))


# ---------------------------------------------------------------------------------------------- backup
def test_backup_writes_a_whole_project_and_refuses_to_overwrite(tmp_path):
    path = make_project(tmp_path / "p.wbp")
    out = tmp_path / "copy.wbp"
    done = run_cli("backup", path, out)
    assert done.returncode == 0, done.stderr
    with Project.open(out) as copy, Project.open(path) as orig:
        assert copy.stats() == orig.stats() and copy.integrity_problems() == []
    before = digest(out)
    again = run_cli("backup", path, out)
    assert again.returncode != 0 and "already exists" in again.stderr and digest(out) == before


@contextmanager
def worker_logging_metrics(path: Path) -> Iterator[None]:
    """A training worker's writes: a process committing one metrics step after another until the block ends."""
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from workbench.store import Project\n"
        "with Project.open(sys.argv[1]) as p:\n"
        "    run = p.create_run('sft', {})\n"
        "    print('ready', flush=True)\n"
        "    for step in range(1000000):\n"
        "        p.log_metrics(run, step, {'train/loss': 1.0 / (step + 1), 'train/lr': 1e-4})\n"
    ), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        yield
    finally:
        writer.kill()
        writer.wait()


def assert_whole_commits_only(copy_path: Path) -> int:
    """The copy is sound and holds a prefix of the worker's steps; returns how many."""
    with Project.open(copy_path) as copy:
        assert copy.integrity_problems() == [] and copy.counter_mismatches() == []
        steps = [s for s, _, _ in copy.metrics(1, "train/loss")]
        assert steps == list(range(len(steps)))
        return len(steps)


def test_backup_while_a_worker_writes_is_consistent(tmp_path):
    path = make_project(tmp_path / "p.wbp", n=200)
    copies = [tmp_path / f"copy{i}.wbp" for i in range(3)]
    with worker_logging_metrics(path):
        for c in copies:
            assert run_cli("backup", path, c).returncode == 0
    for c in copies:
        assert_whole_commits_only(c)


def test_a_backup_in_many_steps_is_one_snapshot_while_a_worker_writes(tmp_path):
    """A large project is copied in steps; commits landing between the steps neither tear the copy nor restart it
    (which, with a worker committing all the time, would never finish)."""
    path = make_project(tmp_path / "p.wbp", n=200)
    copy = tmp_path / "copy.wbp"
    outcome: list[object] = []
    with worker_logging_metrics(path), Project.open(path) as project:
        time.sleep(0.5)  # the worker is committing steady
        pages = project.conn.execute("PRAGMA page_count").fetchone()[0]
        thread = threading.Thread(target=lambda: outcome.append(project.copy_to(copy, pages_per_step=2)), daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(timeout=30)
        took = time.monotonic() - started
        during = len(project.metrics(1, "train/loss"))
    assert outcome == [copy], f"the copy of {pages} pages in steps of 2 did not finish within {took:.0f} s"
    assert pages > 20
    assert 0 < assert_whole_commits_only(copy) <= during

def test_rotation_keeps_the_newest(tmp_path):
    path = make_project(tmp_path / "p.wbp", n=2)
    with Project.open(path) as p:
        p.set_meta("backups.keep", "3")
        made = [back_up(p, "auto").path for _ in range(5)]
    kept = [b.path for b in list_backups(path)]
    assert kept == made[::-1][:3]
    assert prune(path, 1) == kept[1:] and [b.path for b in list_backups(path)] == kept[:1]


def test_import_from_the_cli_backs_up_first(tmp_path):
    path = make_project(tmp_path / "p.wbp", n=2)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "New question?", "completion": "New answer."}) + "\n")
    assert run_cli("import", path, data).returncode == 0
    (backup,) = list_backups(path)
    assert backup.reason == "before-import"
    with Project.open(backup.path) as b, Project.open(path) as p:
        assert b.stats()["prompts"] == 2 and p.stats()["prompts"] == 3
    assert run_cli("import", path, data, "--no-backup").returncode == 0 and len(list_backups(path)) == 1


# ---------------------------------------------------------------------------------------------- restore
def test_restore_puts_the_backup_in_place_and_keeps_the_replaced_file(tmp_path):
    path = make_project(tmp_path / "p.wbp", n=5)
    with Project.open(path) as p:
        old = back_up(p, "manual")
        p.add_prompt([{"role": "user", "content": "added after the backup"}])
    overwrite_middle(path)
    damaged = digest(path)
    out = run_cli("restore", old.path, path)
    assert out.returncode == 0, out.stderr
    (replaced,) = [f for f in tmp_path.glob("p.wbp.replaced-*") if not f.name.endswith(("-wal", "-shm"))]
    assert digest(replaced) == damaged and "kept as" in out.stdout
    assert run_cli("check", path).returncode == 0
    with Project.open(path) as p:
        assert p.stats()["prompts"] == 5
    # A second restore within the same second never overwrites the first replaced file.
    assert run_cli("restore", old.path, path).returncode == 0
    assert len([f for f in tmp_path.glob("p.wbp.replaced-*") if not f.name.endswith(("-wal", "-shm"))]) == 2
    assert digest(replaced) == damaged


def test_restore_refuses_a_project_open_in_a_window_or_training(tmp_path):
    path = make_project(tmp_path / "p.wbp", n=3)
    with Project.open(path) as p:
        b = back_up(p)
    before = digest(path)
    lock = path.with_name(path.name + ".lock")
    lock.write_text(f"{os.getpid()}\npython\n{socket.gethostname()}\n")
    out = run_cli("restore", b.path, path)
    assert out.returncode != 0 and "open in an RLHF Workbench window" in out.stderr
    lock.write_text("999999999\npython\n" + socket.gethostname() + "\n")  # a stale lock: its process is gone
    with Project.open(path) as p:
        run = p.create_run("sft", {})
        p.update_run(run, status="running", pid=os.getpid())
    before = digest(path)
    out = run_cli("restore", b.path, path)
    assert out.returncode != 0 and f"run {run} is still training" in out.stderr
    assert digest(path) == before and not list(tmp_path.glob("p.wbp.replaced-*"))


def test_restore_refuses_a_damaged_backup(tmp_path):
    path = make_project(tmp_path / "p.wbp", n=60)
    with Project.open(path) as p:
        b = back_up(p)
    overwrite_middle(b.path)
    before = digest(path)
    out = run_cli("restore", b.path, path)
    assert out.returncode != 0 and "damaged" in out.stderr and digest(path) == before


def test_migration_backs_up_into_the_backups_folder(tmp_path):
    old = tmp_path / "old.wbp"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA application_id=1380730950")
    conn.execute("CREATE TABLE scratch (x)")
    conn.close()
    with Project.open(old) as p:
        assert p.schema_version == SCHEMA_VERSION
    (b,) = list_backups(old)
    assert b.reason == "before-migration-v0" and b.path.parent == backups_dir(old)


# ---------------------------------------------------------------------------------------------- read-only
@pytest.fixture
def read_only():
    """Make files and folders read-only even for root (chattr +i), undone afterwards."""
    made: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555 if path.is_dir() else 0o444)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("this file system cannot make a file read-only for root (chattr +i)")
        made.append(path)

    yield make
    for path in reversed(made):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_project_opens_for_reading_only(tmp_path, read_only, what):
    folder = tmp_path / "shared"
    folder.mkdir()
    path = make_project(folder / "p.wbp", n=4)
    read_only(path if what == "file" else folder)
    with pytest.raises(ReadOnlyProjectError, match="not writable"):
        Project.open(path)
    with Project.open(path, read_only=None) as p:
        assert p.read_only and p.stats()["prompts"] == 4
        with pytest.raises(ReadOnlyProjectError, match="read-only"):
            p.add_prompt([{"role": "user", "content": "new"}])
    assert run_cli("check", path).returncode == 0
