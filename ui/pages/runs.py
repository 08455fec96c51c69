"""Runs: every run of the project with its stage, base model, snapshot, status, duration and final metrics; the
curves of the selected runs overlaid; the config difference between two runs; resume a failed or cancelled run;
open its output folder; delete it (row, metrics, checkpoints and folder) after a confirmation.

Curves come from the metrics the worker stored in the project file, so old runs redraw after a restart. A resumed
run goes through the shared RunManager, so the Train page shows it live too.

What a finished run is good for, one click away: "Use as reward model" (a reward-model run: the Train page on PPO
with it picked), "Evaluate" (a tuned run: the Evaluation page with it as model B against its base), "Generate from
it" (the Generate page with its adapter), and "Export…" (any run with an adapter: :mod:`ui.export_dialog`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.eval_round import TUNED_STAGES
from workbench.jobs.client import Outcome, pid_alive
from workbench.paths import BUNDLED_MODEL_REF
from workbench.run_report import config_diff, fmt_duration, headline_text, metrics_summary, run_duration, short_model
from workbench.train_checks import done_runs

from ..charts import MetricCharts
from ..engine_client import run_manager
from ..export_dialog import ExportDialog
from ..navigation import go_to
from .base import Page

# Stages whose adapter can be exported (a generation or a scoring makes none).
EXPORTABLE = ("sft", "dpo", "ppo", "rm", "safety")

COLUMNS = ("Run", "Name", "Stage", "Base model", "Snapshot", "Status", "Started", "Duration", "Final metrics")
STATUS_COLOURS = {"done": "#1a7f37", "failed": "#b00020", "cancelled": "#9a6700", "running": "#0969da",
                  "pending": "#57606a"}
class RunsPage(Page):
    name = "runs"
    title = "Runs"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.manager = run_manager(session)
        self.runs: list[dict[str, Any]] = []

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._selection_changed)

        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue a failed or cancelled run from its last checkpoint")
        self.resume_button.clicked.connect(self.resume_selected)
        self.folder_button = QPushButton("Open output folder")
        self.folder_button.clicked.connect(self.open_folder)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        self.use_rm_button = QPushButton("Use as reward model")
        self.use_rm_button.setToolTip("Open Train on PPO with this reward model picked")
        self.use_rm_button.clicked.connect(self.use_as_reward_model)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip("Open Evaluation with this run as model B, against its base")
        self.evaluate_button.clicked.connect(self.evaluate_selected)
        self.generate_button = QPushButton("Generate from it")
        self.generate_button.setToolTip("Open Generate with this run's adapter")
        self.generate_button.clicked.connect(self.generate_from_selected)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Merge the adapter into its base and write it as hf, GGUF or Ollama, checked")
        self.export_button.clicked.connect(self.export_selected)
        self.export_dialog: ExportDialog | None = None
        self.info = QLabel("Select runs to overlay their curves; select two to compare their settings.")
        self.info.setWordWrap(True)

        self.charts = MetricCharts()
        self.diff = QTableWidget(0, 3)
        self.diff.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.diff.verticalHeader().hide()
        self.diff.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.diff.setHorizontalHeaderLabels(["Setting", "Run A", "Run B"])
        self.error_view = QLabel()
        self.error_view.setWordWrap(True)
        self.error_view.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.error_view.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.charts, "Curves")
        self.tabs.addTab(self.diff, "Config difference")
        self.tabs.addTab(self.error_view, "Details")

        buttons = QHBoxLayout()
        for b in (self.refresh_button, self.resume_button, self.folder_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        for b in (self.use_rm_button, self.evaluate_button, self.generate_button, self.export_button):
            buttons.addWidget(b)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addLayout(buttons)
        tl.addWidget(self.table, 1)
        tl.addWidget(self.info)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.tabs)
        split.setSizes([300, 500])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

        self.manager.run_finished.connect(self._on_finished)
        self.manager.run_started.connect(lambda *_: self.refresh())
        self.refresh()

    def activate(self) -> None:
        super().activate()
        self.refresh()

    def _on_finished(self, outcome: Outcome) -> None:
        if not self.project.is_open:
            return  # the project was closed while the run ended
        self.refresh()
        if outcome.status == "failed":
            self.info.setText(f"<span style='color:#b00'>Run {outcome.run_id}: {outcome.error}</span>")
        elif outcome.status in ("done", "cancelled"):
            self.info.setText(f"Run {outcome.run_id}: {outcome.status}.")

    # ------------------------------------------------------------------ table
    def refresh(self) -> None:
        selected = set(self.selected_ids())
        self.runs = list(reversed(self.project.runs()))  # newest first
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.runs))
        for row, r in enumerate(self.runs):
            status = r["status"]
            if status == "running" and not pid_alive(r.get("pid")):
                status = "running?"  # the worker is gone; the next re-attach records how it ended
            cells = [
                str(r["id"]), r["name"] or "", r["stage"], short_model(r.get("base_model")),
                str(r["snapshot_id"] or ""), status, (r.get("started_at") or r["created_at"] or "")[:19].replace("T", " "),
                fmt_duration(run_duration(r)), metrics_summary(r.get("final_metrics")),
            ]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 0:
                    item.setData(Qt.ItemDataRole.UserRole, r["id"])
                if col == 5:
                    item.setForeground(QColor(STATUS_COLOURS.get(r["status"], "#000")))
                if col == 8 and r.get("error"):
                    item.setToolTip(r["error"])
                self.table.setItem(row, col, item)
        self.table.clearSelection()
        for row, r in enumerate(self.runs):
            if r["id"] in selected:
                self._add_row_selection(row)
        self.table.blockSignals(False)
        self._selection_changed()

    def _add_row_selection(self, row: int) -> None:
        idx = self.table.model().index(row, 0)
        self.table.selectionModel().select(
            idx, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)

    def select_runs(self, run_ids: list[int]) -> None:
        self.table.clearSelection()
        for row, r in enumerate(self.runs):
            if r["id"] in run_ids:
                self._add_row_selection(row)
        self._selection_changed()

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()}) if self.table.rowCount() else []
        return [self.runs[r]["id"] for r in rows if r < len(self.runs)]

    def selected_runs(self) -> list[dict[str, Any]]:
        ids = self.selected_ids()
        return [r for r in self.runs if r["id"] in ids]

    def _selection_changed(self) -> None:
        runs = self.selected_runs()
        busy = self.manager.busy
        self.resume_button.setEnabled(len(runs) == 1 and runs[0]["status"] in ("failed", "cancelled") and not busy)
        self.folder_button.setEnabled(len(runs) == 1 and bool(runs[0].get("output_dir")))
        self.delete_button.setEnabled(bool(runs) and all(r["status"] not in ("running", "pending") or
                                                         not pid_alive(r.get("pid")) for r in runs))
        one = self.finished_selected()
        stage = one["stage"] if one else None
        self.use_rm_button.setEnabled(stage == "rm")
        self.evaluate_button.setEnabled(stage in TUNED_STAGES)
        self.generate_button.setEnabled(stage in TUNED_STAGES)
        self.export_button.setEnabled(stage in EXPORTABLE)
        self.show_curves(runs)
        self.show_diff(runs)
        self.show_details(runs)

    # ------------------------------------------------------------------ views
    def show_curves(self, runs: list[dict[str, Any]]) -> None:
        self.charts.clear()
        for r in runs:
            self.charts.set_series(f"run {r['id']}", self.project.metrics(r["id"]))
        self.charts.flush(fit=True)

    def show_diff(self, runs: list[dict[str, Any]]) -> None:
        if len(runs) != 2:
            self.diff.setRowCount(0)
            self.diff.setHorizontalHeaderLabels(["Setting", "Run A", "Run B"])
            return
        a, b = sorted(runs, key=lambda r: r["id"])
        rows = [("stage", a["stage"], b["stage"])] if a["stage"] != b["stage"] else []
        rows += [("snapshot", a["snapshot_id"], b["snapshot_id"])] if a["snapshot_id"] != b["snapshot_id"] else []
        rows += config_diff(a["config"], b["config"])
        self.diff_rows = rows
        self.diff.setHorizontalHeaderLabels(["Setting", f"Run {a['id']}", f"Run {b['id']}"])
        self.diff.setRowCount(len(rows))
        for i, (k, va, vb) in enumerate(rows):
            for j, text in enumerate((k, _fmt(va), _fmt(vb))):
                self.diff.setItem(i, j, QTableWidgetItem(text))
        if not rows:
            self.diff.setRowCount(1)
            self.diff.setItem(0, 0, QTableWidgetItem("(the two runs have the same settings)"))

    def show_details(self, runs: list[dict[str, Any]]) -> None:
        if len(runs) != 1:
            self.error_view.setText("")
            return
        r = runs[0]
        lines = [f"<b>Run {r['id']}</b> · {r['stage']} · {r['status']}",
                 f"Base: {r.get('base_model')}", f"Starting adapter: {r.get('adapter_from') or 'none'}",
                 f"Snapshot: {r.get('snapshot_id') or '—'} · parent run: {r.get('parent_run') or '—'}",
                 f"Folder: {r.get('output_dir') or '—'}"]
        if r.get("error"):
            lines.append(f"<span style='color:#b00'><b>Error:</b> {r['error']}</span>")
        if headline_text(r):
            lines.append(f"Achieved: <b>{headline_text(r)}</b>")
        if r.get("final_metrics"):
            lines.append("Final metrics: " + metrics_summary(r["final_metrics"], limit=20))
        self.error_view.setText("<br>".join(lines))

    # ------------------------------------------------------------------ actions
    def finished_selected(self) -> dict[str, Any] | None:
        """The one selected run when it finished with an adapter on disk (its ``adapter`` key names it)."""
        ids = self.selected_ids()
        if len(ids) != 1:
            return None
        return next((r for r in done_runs(self.project, None) if r["id"] == ids[0]
                     and Path(r["adapter"]).is_dir()), None)

    def use_as_reward_model(self) -> QWidget | None:
        run = self.finished_selected()
        if run is None or run["stage"] != "rm":
            return None

        def pick(train) -> None:
            train.set_stage("ppo")
            train.set_model_field("reward_model", run["adapter"])
        return go_to(self, "train", pick)

    def evaluate_selected(self) -> QWidget | None:
        run = self.finished_selected()
        if run is None:
            return None
        return go_to(self, "evaluation", lambda page: page.evaluate_run(run["base_model"] or BUNDLED_MODEL_REF,
                                                                        run["adapter"]))

    def generate_from_selected(self) -> QWidget | None:
        run = self.finished_selected()
        if run is None:
            return None
        return go_to(self, "generate", lambda page: page.model.set_model(run["base_model"] or BUNDLED_MODEL_REF,
                                                                         run["adapter"]))

    def export_selected(self) -> ExportDialog | None:
        run = self.finished_selected()
        if run is None or run["stage"] not in EXPORTABLE:
            return None
        dlg = ExportDialog(self.project.path, run, run["adapter"], self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.destroyed.connect(lambda *_: setattr(self, "export_dialog", None))
        dlg.show()
        self.export_dialog = dlg
        return dlg

    def resume_selected(self) -> bool:
        runs = self.selected_runs()
        if len(runs) != 1:
            return False
        from workbench.errors import WorkbenchError

        try:
            self.manager.resume(runs[0]["id"])
        except WorkbenchError as e:
            QMessageBox.warning(self, "Resume", str(e))
            return False
        self.info.setText(f"Run {runs[0]['id']} resumed; the Train page shows it live.")
        self.resume_button.setEnabled(False)
        return True

    def open_folder(self) -> Path | None:
        runs = self.selected_runs()
        if len(runs) != 1 or not runs[0].get("output_dir"):
            return None
        path = Path(runs[0]["output_dir"])
        if QGuiApplication.platformName() != "offscreen":
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        return path

    def delete_selected(self) -> list[int]:
        runs = self.selected_runs()
        if not runs:
            return []
        ids = ", ".join(str(r["id"]) for r in runs)
        answer = QMessageBox.question(
            self, "Delete runs",
            f"Delete run(s) {ids}: their record, metrics, checkpoints and output folders (adapters)? This cannot be "
            "undone. The data snapshots they trained on stay.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return []
        deleted = []
        for r in runs:
            if r["status"] in ("running", "pending") and pid_alive(r.get("pid")):
                continue
            self.project.delete_run(r["id"])
            folder = r.get("output_dir")
            if folder and Path(folder).is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            deleted.append(r["id"])
        self.refresh()
        self.info.setText(f"Deleted run(s) {', '.join(map(str, deleted))}." if deleted else "Nothing deleted.")
        return deleted


def _fmt(v: Any) -> str:
    return "none" if v is None else str(v)
