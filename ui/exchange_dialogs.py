"""Project → Import… and Project → Export…: the command line's ``workbench import`` and ``workbench export`` in the
window, with the same formats (:data:`workbench.importers.IMPORT_FORMATS`, :data:`workbench.exporters.
EXPORT_FORMATS`), the same all-or-nothing behaviour and the same messages.

Each runs the core's function on a thread with a connection of its own (:class:`ui.project_care._Call`), so a large
file never freezes the window; a busy progress bar shows meanwhile. An import is preceded by a backup
(``before-import``, :func:`workbench.backups.back_up`), as on the command line. A structural error aborts the whole
file and is shown as it is (file, line, field); the project is then unchanged.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from workbench.backups import back_up
from workbench.exporters import APPLIES, EXPORT_FORMATS, export
from workbench.importers import IMPORT_FORMATS, import_file
from workbench.reports import ExportReport, ImportReport
from workbench.store import Project

from .project_care import _Call

IMPORT_FILTER = "Data files (*.jsonl *.json *.csv *.gz);;All files (*)"
INCLUDE_OPTIONS = {
    "include_ties": "Keep tie judgments",
    "include_both_bad": "Keep both-bad judgments",
    "include_retests": "Keep retest rows",
    "include_eval": "Keep blind-evaluation items",
    "include_winners": "Add winning responses to the demonstrations",
}


def import_into(project_path: Path, file: Path, fmt: str, source: str | None) -> ImportReport:
    """A backup, then the import, on a connection of its own (what the import dialog's thread runs)."""
    with Project.open(project_path) as project:
        back_up(project, "before-import")
        return import_file(project, file, fmt, source=source or None)


def export_from(project_path: Path, out: Path, fmt: str, options: dict[str, bool]) -> ExportReport:
    """The export, on a connection of its own (what the export dialog's thread runs)."""
    with Project.open(project_path) as project:
        return export(project, out, fmt, **options)


class _FileDialog(QDialog):
    """What both dialogs share: a file row, a format, a start button, a busy bar and the result."""

    done_with = Signal(object)  # the report, or None after an error

    def __init__(self, title: str, start_text: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(680, 300)
        self.file = QLineEdit()
        self.browse = QPushButton("Choose…")
        self.browse.clicked.connect(self._browse)
        self.format = QComboBox()
        self.form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.file, 1)
        row.addWidget(self.browse)
        self.form.addRow("File", row)
        self.form.addRow("Format", self.format)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.result.setObjectName("result")
        self.start_button = QPushButton(start_text)
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addLayout(self.form)
        lay.addWidget(self.bar)
        lay.addWidget(self.result, 1)
        lay.addLayout(buttons)
        self.thread: _Call | None = None
        self.report = None
        self.error = ""

    def _browse(self) -> None:  # pragma: no cover - a native dialog
        raise NotImplementedError

    def work(self):
        raise NotImplementedError

    def start(self) -> bool:
        if self.thread is not None or not self.file.text().strip():
            return False
        self.report, self.error = None, ""
        self.bar.setRange(0, 0)  # busy: the core reads, checks and writes the whole file in one go
        self.result.setText("Working…")
        self.start_button.setEnabled(False)
        self.thread = _Call(self.work(), self)
        self.thread.finished_with.connect(self._finished)
        self.thread.start()
        return True

    def _finished(self, report, error: str) -> None:
        if self.thread is not None:
            self.thread.wait()
        self.thread = None
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if report is not None else 0)
        self.start_button.setEnabled(True)
        self.report, self.error = report, error
        if report is None:
            self.result.setText(f"<span style='color:#b00'><b>Nothing changed.</b> {error}</span>")
        else:
            self.result.setText(report.summary())
        self.done_with.emit(report)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.thread is not None:
            self.thread.wait()  # the transaction finishes (or rolls back) before the dialog goes
        super().closeEvent(event)


class ImportDialog(_FileDialog):
    def __init__(self, project_path: Path, parent: QWidget | None = None):
        super().__init__("Import into the project", "Import", parent)
        self.project_path = Path(project_path)
        self.setObjectName("importDialog")
        self.format.addItems(list(IMPORT_FORMATS))
        self.source = QLineEdit()
        self.source.setPlaceholderText("derived from the file")
        self.form.addRow("Source name", self.source)
        self.result.setText("Each file goes in as one transaction: an error anywhere in it leaves the project "
                            "unchanged, with a message naming the file, line and field. A backup is made first.")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a data file", "", IMPORT_FILTER)
        if path:
            self.file.setText(path)

    def work(self):
        path, file = self.project_path, Path(self.file.text().strip()).expanduser()
        fmt, source = self.format.currentText(), self.source.text().strip()
        return lambda: import_into(path, file, fmt, source)


class ExportDataDialog(_FileDialog):
    def __init__(self, project_path: Path, parent: QWidget | None = None):
        super().__init__("Export the project's data", "Export", parent)
        self.project_path = Path(project_path)
        self.setObjectName("exportDataDialog")
        self.format.addItems(list(EXPORT_FORMATS))
        self.format.currentTextChanged.connect(self._format_changed)
        self.options = {key: QCheckBox(text) for key, text in INCLUDE_OPTIONS.items()}
        for box in self.options.values():
            self.form.addRow("", box)
        self.result.setText("A file ending in .jsonl gets JSON Lines; any other name a Hugging Face datasets folder. "
                            "Held-out prompts never enter a training export; the export records a snapshot.")
        self._format_changed(self.format.currentText())

    def _format_changed(self, fmt: str) -> None:
        for key, box in self.options.items():
            box.setEnabled(key in APPLIES.get(fmt, set()))
            if not box.isEnabled():
                box.setChecked(False)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to", "export.jsonl", "JSON Lines (*.jsonl);;All files (*)")
        if path:
            self.file.setText(path)

    def work(self):
        path, out, fmt = self.project_path, Path(self.file.text().strip()).expanduser(), self.format.currentText()
        options = {k: box.isChecked() for k, box in self.options.items() if box.isChecked()}
        return lambda: export_from(path, out, fmt, options)
