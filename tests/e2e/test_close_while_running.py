"""Closing the window while a run is going: the real question box, answered each of its three ways.

- "Don't close": the window stays, the run goes on;
- "Cancel the run": the run stops with a checkpoint and is recorded cancelled;
- "Let it finish in the background": the worker goes on without the window, and the next Train page on the project
  re-attaches to it and shows how it ended.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton

from tests.e2e.conftest import TINY_SETTINGS
from workbench.jobs.client import pid_alive
from workbench.store import Project

pytestmark = pytest.mark.timeout(600)


def _running_page(qtbot, session, tiny_model_dir, **settings):
    from ui.pages.train import TrainPage

    page = TrainPage(session)
    qtbot.addWidget(page)
    page.show()
    page.activate()
    page.set_stage("sft")
    page.set_base_model(str(tiny_model_dir))
    page.form.set_values({**TINY_SETTINGS, **settings})
    page.start()
    qtbot.waitUntil(lambda: page.run_id is not None and page.charts.point_count() >= 1, timeout=180_000)
    assert page.manager.busy
    return page


def _answer(button_name: str, seen: list[str]) -> None:
    """Click ``button_name`` in the question box as soon as it is up (it runs its own modal event loop)."""

    def poll() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.objectName() == "closeWhileRunning":
            seen.append(box.text())
            box.findChild(QPushButton, button_name).click()
        else:
            QTimer.singleShot(50, poll)

    QTimer.singleShot(50, poll)


def test_dont_close_keeps_the_window_and_the_run(qtbot, session, tiny_model_dir):
    page = _running_page(qtbot, session, tiny_model_dir, max_steps=100_000, checkpoint_every=0)
    seen: list[str] = []
    _answer("dontClose", seen)
    assert page.confirm_close() is False
    assert seen and f"Run {page.run_id}" in seen[0]
    assert page.manager.busy and pid_alive(page.manager.current.handle.pid)
    points = page.charts.point_count()
    qtbot.waitUntil(lambda: page.charts.point_count() > points, timeout=120_000)  # still live, still drawn


def test_cancel_the_run_stops_it_with_a_checkpoint(qtbot, session, tiny_model_dir, training_project_path):
    page = _running_page(qtbot, session, tiny_model_dir, max_steps=100_000, checkpoint_every=0)
    pid = page.manager.current.handle.pid
    _answer("cancelRun", [])
    assert page.confirm_close() is True
    assert not page.manager.busy
    qtbot.waitUntil(lambda: not pid_alive(pid), timeout=30_000)
    with Project.open(training_project_path) as p:
        run = p.get_run(page.run_id)
        checkpoints = len(p.checkpoints(page.run_id))
    assert run["status"] == "cancelled"
    assert checkpoints >= 1  # cancel saves one first, so the run can be resumed


def test_let_it_finish_then_the_next_window_reattaches(qtbot, session, tiny_model_dir, training_project_path, tmp_path):
    from ui.prefs import Prefs
    from ui.session import Session
    from ui.pages.train import TrainPage

    page = _running_page(qtbot, session, tiny_model_dir, max_steps=60, checkpoint_every=0)
    run_id, pid = page.run_id, page.manager.current.handle.pid
    _answer("letItFinish", [])
    assert page.confirm_close() is True
    assert not page.manager.live_jobs()  # the window stopped listening...
    assert pid_alive(pid)  # ...but the worker goes on
    with Project.open(training_project_path) as p:
        assert p.get_run(run_id)["status"] == "running"

    # The next window on the project: its Train page finds the run and follows it to the end.
    project = Project.open(training_project_path)
    later = Session(project, Prefs(tmp_path / "prefs2.ini"))
    try:
        again = TrainPage(later)
        qtbot.addWidget(again)
        assert again.run_id == run_id and again.manager.busy
        qtbot.waitUntil(lambda: again.last_outcome is not None, timeout=300_000)
        assert again.last_outcome.status == "done", (again.last_outcome.error, again.last_outcome.log_tail)
        assert again.charts.point_count() > 0  # the curves so far were read back from the log
        with Project.open(training_project_path) as p:
            assert p.get_run(run_id)["status"] == "done"
    finally:
        mgr = getattr(later, "_run_manager", None)
        if mgr is not None:
            mgr.shutdown()
        qtbot.wait(50)
        project.close()
