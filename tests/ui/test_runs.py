"""The Runs page on runs recorded in a real project file: table, overlaid curves, config difference, details,
delete with confirmation (row, metrics and folder), resume refused with a clear message when there is no
checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from tests.ui.engine_fixtures import session, training_project_path  # noqa: F401
from workbench.configs import RewardConfig, SftConfig
from workbench.jobs.client import run_dir_for


def _add_run(project, stage, cfg, status, metrics, final=None, error=None) -> int:
    rid = project.create_run(stage, cfg.to_dict(), name=f"{stage} test", base_model=cfg.base_model)
    folder = run_dir_for(project.path, rid)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(cfg.to_yaml())
    project.update_run(rid, status=status, output_dir=str(folder), started_at="2026-11-23T10:00:00.000+00:00",
                       finished_at="2026-11-23T10:03:30.000+00:00", final_metrics=final, error=error)
    for step, values in metrics:
        project.log_metrics(rid, step, values)
    return rid


@pytest.fixture
def runs(session):
    p = session.project
    a = _add_run(p, "sft", SftConfig(lr=2e-4, lora_r=8), "done",
                 [(s, {"train/loss": 3.0 - 0.1 * s, "train/lr": 1e-4}) for s in range(1, 11)],
                 final={"train/loss": 2.0, "eval/loss": 2.2})
    b = _add_run(p, "sft", SftConfig(lr=1e-3, lora_r=16), "failed",
                 [(s, {"train/loss": 3.0 - 0.05 * s}) for s in range(1, 6)], error="ran out of memory; lower batch_size")
    c = _add_run(p, "rm", RewardConfig(), "cancelled", [(1, {"train/loss": 0.69, "eval/accuracy": 0.5})])
    return a, b, c


@pytest.fixture
def page(qtbot, session, runs):
    from ui.pages.runs import RunsPage

    w = RunsPage(session)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    w.activate()
    return w


def test_table_lists_every_run_with_status_duration_and_metrics(page, runs):
    a, b, c = runs
    assert page.table.rowCount() == 3
    rows = {int(page.table.item(r, 0).text()): [page.table.item(r, k).text() for k in range(9)] for r in range(3)}
    assert rows[a][2] == "sft" and rows[a][5] == "done" and rows[a][7] == "3m30s"
    assert "eval/loss 2.2" in rows[a][8]
    assert rows[b][5] == "failed" and rows[c][2] == "rm"


def test_selecting_runs_overlays_their_curves_and_two_show_the_config_difference(page, runs):
    a, b, _ = runs
    page.select_runs([a, b])
    assert set(page.selected_ids()) == {a, b}
    assert page.charts.point_count() == 10 * 2 + 5
    assert {k for k in page.charts.series} >= {(f"run {a}", "train/loss"), (f"run {b}", "train/loss")}
    diff = {k: (va, vb) for k, va, vb in page.diff_rows}
    assert diff["lr"] == (2e-4, 1e-3) and diff["lora_r"] == (8, 16)
    assert "batch_size" not in diff


def test_details_show_the_error_of_a_failed_run_and_resume_is_offered(page, runs):
    _, b, _ = runs
    page.select_runs([b])
    assert "ran out of memory" in page.error_view.text()
    assert page.resume_button.isEnabled()


def test_resume_without_a_checkpoint_is_refused_with_a_message(qtbot, page, runs):
    _, b, _ = runs
    page.select_runs([b])
    assert page.resume_selected()
    qtbot.waitUntil(lambda: "no checkpoint" in page.info.text(), timeout=30_000)
    assert page.manager.current.outcome.status == "failed"


def test_delete_asks_first_and_then_removes_row_metrics_and_folder(page, runs, session, monkeypatch):
    a, _, _ = runs
    folder = Path(session.project.get_run(a)["output_dir"])
    assert folder.is_dir()
    page.select_runs([a])
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.No)
    assert page.delete_selected() == []
    assert folder.is_dir() and session.project.get_run(a)
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kw: QMessageBox.StandardButton.Yes)
    page.select_runs([a])
    assert page.delete_selected() == [a]
    assert not folder.exists()
    assert a not in [r["id"] for r in session.project.runs()]
    assert session.project.metrics(a) == []
    assert page.table.rowCount() == 2


def test_open_folder_gives_the_run_folder(page, runs, session):
    a, _, _ = runs
    page.select_runs([a])
    assert page.open_folder() == Path(session.project.get_run(a)["output_dir"])
