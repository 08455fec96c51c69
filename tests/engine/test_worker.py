"""The worker as a real process started by the job client: events, cancel on stdin, death by signal, re-attach."""

from __future__ import annotations

import os
import signal

import pytest

from engine import checkpoints as ckpt
from tests.engine.sft_helpers import add_demonstrations
from workbench.configs import SftConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import EVENTS_LOG, Event
from workbench.store import Project


@pytest.fixture
def demo_project(project_path):
    with Project.create(project_path) as p:
        add_demonstrations(p)
    return project_path


def worker_priority(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        out = {"nice": int(f.read().rsplit(") ", 1)[1].split()[16])}
    if os.path.exists(f"/proc/{pid}/autogroup"):
        with open(f"/proc/{pid}/autogroup", encoding="ascii") as f:
            out["autogroup_nice"] = int(f.read().split("nice")[1])
    return out


def cfg(tiny, **kw) -> SftConfig:
    base = dict(base_model=str(tiny), batch_size=2, lr=1e-3, max_steps=4, checkpoint_every=2, eval_fraction=0.2,
                lora_r=4, lora_alpha=8, num_threads=1)
    base.update(kw)
    return SftConfig(**base)


def test_run_streams_events_and_can_be_reattached(tiny_model_dir, demo_project):
    client = JobClient(demo_project)
    handle = client.start("sft", cfg(tiny_model_dir))
    events = list(handle.events())
    kinds = [e.type.value for e in events]
    assert kinds[0] == "status" and kinds[-1] == "done", events[-1]
    assert {"progress", "metrics", "checkpoint", "log"} <= set(kinds)
    assert handle.status == "done" and handle.process.returncode == 0
    done = events[-1].data
    assert done["summary"]["tokens_per_s"] > 0 and done["summary"]["peak_mem_mb"] > 0
    assert os.path.isdir(done["output"])
    # a second client re-attaches from the log and sees the same stream
    again = list(client.attach(handle.run_id).events())
    assert [e.to_json() for e in again] == [e.to_json() for e in events]
    logged = [Event.from_json(line) for line in (handle.run_dir / EVENTS_LOG).read_text().splitlines()]
    assert len(logged) == len(events)
    with Project.open(demo_project) as p:
        run = p.get_run(handle.run_id)
    assert run["status"] == "done" and run["pid"] == handle.pid and run["finished_at"]


def test_cancel_on_stdin_stops_after_a_checkpoint(tiny_model_dir, demo_project):
    client = JobClient(demo_project)
    handle = client.start("sft", cfg(tiny_model_dir, max_steps=400, checkpoint_every=0))
    seen = []
    for ev in handle.events():
        seen.append(ev)
        if ev.type.value == "progress" and ev.step == 2:
            priority = worker_priority(handle.pid)
            handle.cancel(timeout_s=120)
    assert handle.status == "cancelled", seen[-1]
    # it leaves the window its share: nice 10 (unless $RLHF_WORKBENCH_WORKER_NICE says otherwise), and (Linux
    # autogroups) its session's nice too
    expected = int(os.environ.get("RLHF_WORKBENCH_WORKER_NICE", "10"))
    assert priority["nice"] == expected
    assert priority.get("autogroup_nice", expected) == expected
    assert seen[-1].data["state"] == "cancelled"
    assert handle.process.returncode == 0  # it stopped by itself, not by the hard kill
    last = ckpt.latest_checkpoint(handle.run_dir / "checkpoints")
    assert last is not None
    stopped_at = int(last.name.split("-")[1])
    assert 2 <= stopped_at < 400
    with Project.open(demo_project) as p:
        assert p.get_run(handle.run_id)["status"] == "cancelled"
        assert max(c["step"] for c in p.checkpoints(handle.run_id)) == stopped_at


def test_worker_killed_by_sigkill_is_recorded_as_failed(tiny_model_dir, demo_project):
    client = JobClient(demo_project)
    handle = client.start("sft", cfg(tiny_model_dir, max_steps=100_000, checkpoint_every=0))
    last = None
    for ev in handle.events():
        last = ev
        if ev.type.value == "progress" and ev.step == 1:
            os.kill(handle.pid, signal.SIGKILL)
    assert handle.process.returncode == -signal.SIGKILL
    assert last.type.value == "error" and last.data["kind"] == "signal" and "SIGKILL" in last.data["message"]
    assert handle.status == "failed"
    with Project.open(demo_project) as p:
        run = p.get_run(handle.run_id)
    assert run["status"] == "failed" and "SIGKILL" in run["error"] and run["finished_at"]
    # the failure is in the run's log too, so a later re-attach sees it
    assert "SIGKILL" in (handle.run_dir / EVENTS_LOG).read_text().splitlines()[-1]


def test_run_outlives_its_client_and_is_reattached_while_running(tiny_model_dir, demo_project):
    client = JobClient(demo_project)
    first = client.start("sft", cfg(tiny_model_dir, max_steps=40, checkpoint_every=0))
    for ev in first.events():
        if ev.type.value == "progress":
            break
    # The starting client goes away (its end of the pipe closes); the worker carries on.
    first.process.stdout.close()
    first.process.stdin.close()
    later = client.attach(first.run_id)
    assert later.process is None and later.pid == first.pid
    events = list(later.events(poll_s=0.1))
    assert events[-1].type.value == "done", events[-1]
    assert max(e.step for e in events if e.type.value == "progress") == 40
    assert first.process.wait(timeout=60) == 0
    with Project.open(demo_project) as p:
        assert p.get_run(first.run_id)["status"] == "done"


@pytest.mark.parametrize("threads", [1, None])
def test_every_job_takes_its_thread_count_from_the_config(tiny_model_dir, demo_project, threads):
    """num_threads belongs to every job's config (here a generation job, not a trainer); none leaves a core free."""
    from workbench.configs import GenerateConfig

    handle = JobClient(demo_project).start("generate", GenerateConfig(
        base_model=str(tiny_model_dir), device="cpu", n_per_prompt=1, max_new_tokens=2, num_threads=threads))
    events = list(handle.events())
    assert handle.status == "done", events[-1]
    running = next(e for e in events if e.type.value == "status" and e.data.get("state") == "running")
    assert running.data["threads"] == (threads or max(1, (os.cpu_count() or 1) - 1))
