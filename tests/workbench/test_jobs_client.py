"""The job client without training: run folders, refusals, and the record of a worker that died silently."""

from __future__ import annotations

import json
import sys

import pytest

from workbench.configs import GenerateConfig, SftConfig
from workbench.errors import WorkbenchError
from workbench.jobs import JobClient, run_dir_for
from workbench.jobs.protocol import CONFIG_FILE, EVENTS_LOG, JOB_FILE
from workbench.paths import runs_dir
from workbench.store import Project


def test_prepare_writes_the_run_folder_and_row(project, project_path):
    project.close()
    client = JobClient(project_path)
    run_id, run_dir = client.prepare("sft", SftConfig(lr=1e-3, name="first"))
    assert run_dir == runs_dir(project_path) / str(run_id) == run_dir_for(project_path, run_id)
    assert SftConfig.load(run_dir / CONFIG_FILE).lr == 1e-3
    job = json.loads((run_dir / JOB_FILE).read_text())
    assert job["stage"] == "sft" and job["run_id"] == run_id
    with Project.open(project_path) as p:
        run = p.get_run(run_id)
    assert run["status"] == "pending" and run["name"] == "first" and run["config"]["lr"] == 1e-3
    assert run["output_dir"] == str(run_dir)


def test_wrong_config_class_is_refused(project, project_path):
    project.close()
    with pytest.raises(WorkbenchError, match="needs a SftConfig"):
        JobClient(project_path).prepare("sft", GenerateConfig())


def test_resume_refuses_finished_runs_and_runs_without_checkpoints(project, project_path):
    project.close()
    client = JobClient(project_path)
    run_id, _ = client.prepare("sft", SftConfig())
    with pytest.raises(WorkbenchError, match="no checkpoint"):
        client.resume(run_id)
    with Project.open(project_path) as p:
        p.update_run(run_id, status="done")
    with pytest.raises(WorkbenchError, match="nothing to resume"):
        client.resume(run_id)


def test_a_worker_that_dies_without_reporting_is_recorded_as_failed(project, project_path):
    """A process that exits non-zero without a terminal event (here: not a worker at all) fails the run, with the
    last line of its stderr as the reason."""
    project.close()
    client = JobClient(project_path, python=sys.executable)
    run_id, run_dir = client.prepare("sft", SftConfig())
    # A broken job file: the worker crashes before it can report anything.
    (run_dir / JOB_FILE).write_text("{broken")
    handle = client._spawn(run_id, run_dir, resume=False)
    events = list(handle.events())
    assert events[-1].type.value == "error" and events[-1].data["kind"] == "crash"
    assert "exit code 1" in events[-1].data["message"] and "JSONDecodeError" in events[-1].data["message"]
    with Project.open(project_path) as p:
        run = p.get_run(run_id)
    assert run["status"] == "failed" and "JSONDecodeError" in run["error"]
    assert "JSONDecodeError" in (run_dir / EVENTS_LOG).read_text()


def _fake_worker(tmp_path, lines: list[str]) -> str:
    """An executable that stands in for the Python running ``-m engine.worker``: prints ``lines``, then sleeps."""
    script = tmp_path / "fake-python"
    printed = "".join(f"print({line!r}, flush=True)\n" for line in lines)
    script.write_text(f"#!{sys.executable}\nimport time\n{printed}time.sleep(60)\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.skipif(sys.platform == "win32", reason="a script with a shebang stands in for the worker")
def test_detach_ends_the_event_stream_and_leaves_the_worker_going(project, project_path, tmp_path):
    """The stream is interruptible from another thread: it ends within a poll, without a terminal event and
    without recording the run as failed, while the worker process goes on; the same holds for a re-attached run
    read from its log."""
    import threading
    import time

    from workbench.jobs.client import pid_alive
    from workbench.jobs.protocol import progress

    project.close()
    client = JobClient(project_path, python=_fake_worker(tmp_path, [progress(1, 10).to_json(), "stray text"]))
    handle = client.start("sft", SftConfig())
    try:
        for attach in (False, True):
            h = client.attach(handle.run_id) if attach else handle
            seen: list = []
            reader = threading.Thread(target=lambda h=h: seen.extend(h.events(poll_s=0.05)))
            reader.start()
            if not attach:
                deadline = time.monotonic() + 30
                while len(seen) < 2 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert [e.type.value for e in seen] == ["progress", "log"]  # stray output comes as a log line
            h.detach()
            reader.join(5)
            assert not reader.is_alive(), "detach did not end the stream"
            assert h.detached and h.outcome().status == "detached"
            assert not any(e.terminal for e in seen)
            assert pid_alive(handle.pid)
        with Project.open(project_path) as p:
            assert p.get_run(handle.run_id)["status"] == "pending"  # nothing recorded: the run is not over
    finally:
        handle.kill()
        handle.process.wait(10)
