"""The window's engine thread with a real worker process: a failure reported with its reason and log, detach
(the run goes on without the window), re-attach from the run's log, cancel of a re-attached run."""

from __future__ import annotations

import pytest

from tests.ui.engine_fixtures import (  # noqa: F401 - fixtures
    session,
    tiny_model_dir,
    training_project_path,
)
from workbench.configs import SftConfig
from workbench.jobs.client import pid_alive
from workbench.store import Project

pytestmark = pytest.mark.timeout(600)

TINY = dict(device="cpu", dtype="float32", quantize="none", batch_size=2, lr=1e-3, lora_r=4, lora_alpha=8,
            eval_fraction=0.2, num_threads=1)


def test_a_failing_worker_reports_the_reason_and_the_log(qtbot, session, tmp_path, training_project_path):
    from ui.engine_client import run_manager

    mgr = run_manager(session)
    outcomes = []
    mgr.run_finished.connect(outcomes.append)
    missing = tmp_path / "no-such-model"
    job = mgr.start("sft", SftConfig(base_model=str(missing), **TINY))
    qtbot.waitUntil(lambda: bool(outcomes), timeout=120_000)
    out = outcomes[0]
    assert out.status == "failed" and str(missing) in out.error
    assert "[error]" in out.log_tail
    assert job.wait(10_000) and not mgr.busy
    with Project.open(training_project_path) as p:
        run = p.get_run(out.run_id)
    assert run["status"] == "failed" and str(missing) in run["error"]


def test_detach_leaves_the_run_going_and_attach_follows_it_to_the_end(qtbot, session, tiny_model_dir,
                                                                       training_project_path):
    from ui.engine_client import run_manager
    from workbench.jobs.client import live_runs

    mgr = run_manager(session)
    points = []
    mgr.metrics.connect(lambda step, values: points.append(step))
    job = mgr.start("sft", SftConfig(base_model=str(tiny_model_dir), max_steps=100_000, checkpoint_every=20, **TINY))
    qtbot.waitUntil(lambda: len(points) >= 2, timeout=180_000)
    pid = job.handle.pid
    mgr.detach_all()
    assert job.wait(5_000), "the thread did not stop on detach"
    assert job.outcome.status == "detached"
    assert pid_alive(pid), "detaching must not stop the worker"
    with Project.open(training_project_path) as p:
        assert [r["id"] for r in live_runs(p)] == [job.run_id]

    # A new Train page (the window opened again) re-attaches to the run by itself and follows it from its log.
    from ui.pages.train import TrainPage

    page = TrainPage(session)
    qtbot.addWidget(page)
    assert page.run_id == job.run_id and mgr.busy
    qtbot.waitUntil(lambda: page.charts.point_count() >= 2, timeout=30_000)  # the log so far, read at once
    before = len(page.charts.series[("", "train/loss")].steps)
    qtbot.waitUntil(lambda: len(page.charts.series[("", "train/loss")].steps) >= before + 3, timeout=120_000)
    steps = page.charts.series[("", "train/loss")].steps
    assert steps == sorted(set(steps))  # each step once: nothing drawn twice
    page.cancel()  # no stdin on a re-attached run: SIGTERM, which the worker takes as cancel
    qtbot.waitUntil(lambda: page.last_outcome is not None, timeout=120_000)
    assert page.last_outcome.status == "cancelled", page.last_outcome
    qtbot.waitUntil(lambda: not pid_alive(pid), timeout=30_000)  # the worker exits after its last event
    job.handle.process.wait(10)  # reap our child
    with Project.open(training_project_path) as p:
        assert p.get_run(job.run_id)["status"] == "cancelled"
