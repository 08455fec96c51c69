"""Export… on the Runs page: a finished run's adapter merged into its base and written as ``hf``, ``gguf`` or
``ollama``, exactly as ``workbench export-model`` does it (:func:`workbench.model_export.start_export`, the export
job in a worker process), on a thread of its own so the window stays responsive.

The dialog asks for the format, the GGUF tensor type and the output folder (by default ``NAME.exports/run-7-gguf-f16``
beside the project, :func:`workbench.model_export.default_output`; "Choose…" for another), shows the job's steps as a
progress bar, and at the end the summary: where it went, its files and size, and the figures of the checks the export
passed (the greedy tokens matched, the GGUF's largest logit difference, a classifier's score difference). An error
(a refused request, a failed check, a full disk) is shown as it is; nothing is left at the output folder then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from workbench.cli_export import export_summary
from workbench.configs import EXPORT_FORMATS, GGUF_QUANTS, ExportConfig
from workbench.errors import WorkbenchError
from workbench.jobs.protocol import EventType
from workbench.model_export import default_output, start_export
from workbench.paths import exports_dir

FORMAT_TEXT = {
    "hf": "hf: merged safetensors with the tokenizer (transformers, vLLM)",
    "gguf": "gguf: one .gguf file (llama.cpp)",
    "ollama": "ollama: the GGUF and a Modelfile",
}


class ExportThread(QThread):
    """Runs one export job and re-emits its events; ``finished_with`` carries the CLI's JSON summary."""

    progress = Signal(int, int, str)     # step, total, phase
    log = Signal(str)
    finished_with = Signal(dict)

    def __init__(self, config: ExportConfig, parent: QObject | None = None):
        super().__init__(parent)
        self.config = config
        self.handle = None

    def run(self) -> None:  # noqa: D401 - QThread's entry point
        try:
            self.handle = start_export(self.config)
        except (WorkbenchError, OSError) as e:
            self.finished_with.emit(export_summary(None, self.config, error=str(e)))
            return
        for ev in self.handle.events(poll_s=0.1):
            if ev.type == EventType.PROGRESS:
                self.progress.emit(int(ev.step or 0), int(ev.data.get("total") or 0), str(ev.data.get("phase", "")))
            elif ev.type == EventType.LOG:
                self.log.emit(str(ev.data.get("message", "")))
            elif ev.type == EventType.ERROR:
                self.log.emit("error: " + str(ev.data.get("message", "")))
        self.finished_with.emit(export_summary(self.handle, self.config))

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel(60)


class ExportDialog(QDialog):
    """Export one finished run (``run``: its record from the store, with an adapter folder)."""

    def __init__(self, project_path: Path, run: dict[str, Any], adapter: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.project_path = Path(project_path)
        self.run = run
        self.adapter = adapter
        self.thread: ExportThread | None = None
        self.result: dict[str, Any] | None = None
        self._output_chosen = False
        self.setWindowTitle(f"Export run {run['id']}")
        self.setObjectName("exportDialog")
        self.resize(720, 460)
        self.format = QComboBox()
        for fmt in EXPORT_FORMATS:
            self.format.addItem(FORMAT_TEXT[fmt], fmt)
        self.format.currentIndexChanged.connect(self._format_changed)
        self.quant = QComboBox()
        self.quant.addItems(list(GGUF_QUANTS))
        self.quant.setToolTip("f16: half precision; q8_0: 8-bit blocks, about half the size")
        self.quant.currentIndexChanged.connect(lambda _i: self._default_output())
        self.output = QLineEdit()
        self.output.textEdited.connect(lambda _t: setattr(self, "_output_chosen", True))
        self.choose = QPushButton("Choose…")
        self.choose.clicked.connect(self._choose)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = QLabel(f"Run {run['id']} · {run['stage']} · adapter {adapter}")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.start_button = QPushButton("Export")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel export")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        row = QHBoxLayout()
        row.addWidget(self.output, 1)
        row.addWidget(self.choose)
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("GGUF tensor type", self.quant)
        form.addRow("Output folder", row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(QLabel("The export checks itself before it is kept: the exported model must answer 8 prompts "
                             "token for token as base + adapter does (a GGUF is read back too); if a check fails, "
                             "nothing is left at the output folder."))
        lay.itemAt(lay.count() - 1).widget().setWordWrap(True)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addWidget(self.details, 1)
        lay.addLayout(buttons)
        self._format_changed()

    # ------------------------------------------------------------------ settings
    def _format_changed(self, *_: object) -> None:
        self.quant.setEnabled(self.format.currentData() != "hf")
        self._default_output()

    def _default_output(self) -> None:
        if not self._output_chosen:
            self.output.setText(str(default_output(self.project_path, self.run["id"], self.format.currentData(),
                                                   self.quant.currentText())))

    def _choose(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export into this folder (new or empty)")
        if path:
            self.set_output(path)

    def set_output(self, path: str) -> None:
        self._output_chosen = True
        self.output.setText(path)

    def config(self) -> ExportConfig:
        return ExportConfig(adapter=self.adapter, output=self.output.text().strip(), format=self.format.currentData(),
                            quant=self.quant.currentText())

    # ------------------------------------------------------------------ running
    def start(self) -> bool:
        if self.thread is not None:
            return False
        cfg = self.config()
        out = Path(cfg.output).expanduser()
        if out.parent == exports_dir(self.project_path):
            out.parent.mkdir(exist_ok=True)  # the default place: made on first use
        self.result = None
        self.details.clear()
        self.bar.setRange(0, 0)
        self.status.setText(f"Exporting run {self.run['id']} as {cfg.format} to {cfg.output}…")
        self.thread = ExportThread(cfg, self)
        self.thread.progress.connect(self._progress)
        self.thread.log.connect(self.details.appendPlainText)
        self.thread.finished_with.connect(self._done)
        self.thread.start()
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        return True

    def cancel(self) -> None:
        if self.thread is not None:
            self.thread.cancel()

    def _progress(self, step: int, total: int, phase: str) -> None:
        if total:
            self.bar.setRange(0, total)
            self.bar.setValue(step)
        if phase:
            self.status.setText(f"Step {step} of {total}: {phase}")

    def _done(self, summary: dict[str, Any]) -> None:
        if self.thread is not None:
            self.thread.wait()
        self.thread = None
        self.result = summary
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if summary.get("status") == "done" else 0)
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if summary.get("status") == "done":
            files = ", ".join(summary.get("files") or [])
            self.status.setText(f"<b>Exported</b> to {summary.get('output')} ({summary.get('size_mb', 0):,.1f} MB"
                                + (f": {files}" if files else "") + ").<br>Checks passed: "
                                + check_text(summary.get("checks") or {}))
            self._output_chosen = False
            self._default_output()  # a second export gets a fresh folder
        else:
            self.status.setText(f"<span style='color:#b00'><b>Export {summary.get('status')}:</b> "
                                f"{summary.get('error') or ''}</span>")
        self.details.appendPlainText(json.dumps(summary, indent=1, ensure_ascii=False, default=str))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.thread is not None:  # the export ends cleanly (it removes its build folder), then the dialog goes
            self.thread.cancel()
            self.thread.wait(120_000)
        super().closeEvent(event)


def check_text(checks: dict[str, Any]) -> str:
    """The checks' figures in words: ``8 prompts, 192 tokens identical · largest logit difference 0.3%``."""
    parts = []
    for key, value in checks.items():
        if isinstance(value, float):
            parts.append(f"{key.replace('_', ' ')} {value:.4g}")
        else:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return " · ".join(parts) or "none reported"
