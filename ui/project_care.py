"""Taking care of the open project from the window: automatic backups, the Backups and Check dialogs, the offer to
restore when a file turns out damaged, and the banner of a read-only project.

Everything that touches the file runs the core's functions (:mod:`workbench.backups`,
:mod:`workbench.project_check`) on a thread with its own connection, so a backup or a check of a large project
never blocks the window; the widgets only show results.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from workbench.backups import (
    DEFAULT_KEEP,
    KEEP_SETTING,
    Backup,
    back_up_file,
    keep_count,
    list_backups,
    newest_backup,
    restore,
)
from workbench.errors import WorkbenchError
from workbench.project_check import CheckReport, check_project

BACKUP_EVERY_MINUTES = 30


class _Call(QThread):
    """Runs one core function on its own thread; ``finished_with`` carries its result or the error's message."""

    finished_with = Signal(object, str)

    def __init__(self, fn, parent: QObject | None = None):
        super().__init__(parent)
        self.fn = fn

    def run(self) -> None:  # noqa: D401 - QThread's entry point
        try:
            self.finished_with.emit(self.fn(), "")
        except (WorkbenchError, OSError) as e:
            self.finished_with.emit(None, str(e))


class BackupScheduler(QObject):
    """Every ``minutes`` while the window has the project open, a backup when something changed since the last one
    (the expert's judgments or a training worker's writes)."""

    backed_up = Signal(object)  # Backup
    failed = Signal(str)

    def __init__(self, project, minutes: float = BACKUP_EVERY_MINUTES, parent: QObject | None = None):
        super().__init__(parent)
        self.project = project
        self.timer = QTimer(self)
        self.timer.setInterval(int(minutes * 60_000))
        self.timer.timeout.connect(self.maybe_back_up)
        self._mark = project.change_mark()
        self._thread: _Call | None = None
        if not project.read_only:
            self.timer.start()

    def maybe_back_up(self) -> bool:
        """Start a backup if the project changed since the last one; True when one started."""
        mark = self.project.change_mark()
        if mark == self._mark or self.busy:
            return False
        self._mark = mark
        return self.back_up("auto")

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def back_up(self, reason: str = "manual") -> bool:
        if self.busy:
            return False
        path = self.project.path
        self._thread = _Call(lambda: back_up_file(path, reason), self)
        self._thread.finished_with.connect(self._done)
        self._thread.start()
        return True

    def _done(self, backup: Backup | None, error: str) -> None:
        if backup is None:
            self.failed.emit(error)
        else:
            self.backed_up.emit(backup)

    def stop(self) -> None:
        self.timer.stop()
        if self._thread is not None:
            self._thread.wait()


class BackupsDialog(QDialog):
    """The project's backups, newest first: back up now, restore one, and how many to keep. ``on_restore`` gets
    the chosen backup's path once the dialog has closed (restoring closes the project this dialog shows)."""

    def __init__(self, project, scheduler: BackupScheduler, on_restore, parent: QWidget | None = None):
        super().__init__(parent)
        self.project, self.scheduler, self.on_restore = project, scheduler, on_restore
        self.setWindowTitle("Backups")
        self.resize(640, 360)
        self.list = QListWidget()
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.keep = QSpinBox()
        self.keep.setRange(1, 1000)
        self.keep.setValue(keep_count(project))
        self.keep.setEnabled(not project.read_only)
        self.keep.valueChanged.connect(lambda n: project.set_meta(KEEP_SETTING, str(n)))
        self.now_button = QPushButton("Back up now")
        self.now_button.setEnabled(not project.read_only)
        self.now_button.clicked.connect(self.back_up_now)
        self.restore_button = QPushButton("Restore the selected backup…")
        self.restore_button.clicked.connect(self.ask_restore)
        keep_row = QHBoxLayout()
        keep_row.addWidget(QLabel("Keep the newest"))
        keep_row.addWidget(self.keep)
        keep_row.addWidget(QLabel(f"backups (default {DEFAULT_KEEP}); a backup is made every "
                                  f"{BACKUP_EVERY_MINUTES} minutes while something changes, and before imports"))
        keep_row.addStretch(1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.now_button)
        buttons.addWidget(self.restore_button)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"In {project.path.name}.backups/ beside the project:"))
        lay.addWidget(self.list, 1)
        lay.addLayout(keep_row)
        lay.addWidget(self.note)
        lay.addLayout(buttons)
        scheduler.backed_up.connect(lambda b: (self.refresh(), self.note.setText(f"Backed up: {b.describe()}")))
        scheduler.failed.connect(lambda e: self.note.setText(f"<span style='color:#b00'>Backup failed: {e}</span>"))
        self.refresh()

    def refresh(self) -> None:
        self.backups = list_backups(self.project.path)
        self.list.clear()
        for b in self.backups:
            self.list.addItem(b.describe())
        if self.backups:
            self.list.setCurrentRow(0)
        else:
            self.note.setText("No backup yet.")
        self.restore_button.setEnabled(bool(self.backups))

    def back_up_now(self) -> None:
        if self.scheduler.back_up("manual"):
            self.note.setText("Backing up…")

    def ask_restore(self) -> None:
        row = self.list.currentRow()
        if row < 0:
            return
        b = self.backups[row]
        answer = QMessageBox.question(
            self, "Restore a backup",
            f"Replace the project with the backup of {b.taken_at:%Y-%m-%d %H:%M:%S} ({b.reason})?\n\n"
            f"Everything done since then is no longer in the project; the current file is kept beside it as "
            f"{self.project.path.name}.replaced-<time>.")
        if answer == QMessageBox.StandardButton.Yes:
            on_restore, path = self.on_restore, str(b.path)
            self.accept()
            QTimer.singleShot(0, lambda: on_restore(path))


class CheckDialog(QDialog):
    """``workbench check`` in the window: the report, and a repair of what can be repaired."""

    def __init__(self, project_path: Path, parent: QWidget | None = None, *, can_repair: bool = True):
        super().__init__(parent)
        self.path = Path(project_path)
        self.setWindowTitle("Check the project")
        self.resize(720, 400)
        self.text = QPlainTextEdit(readOnly=True)
        self.repair_button = QPushButton("Repair what can be repaired")
        self.repair_button.setEnabled(False)
        self.repair_button.clicked.connect(lambda: self.run(repair=True))
        self.can_repair = can_repair
        lay = QVBoxLayout(self)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.repair_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.report: CheckReport | None = None
        self._thread: _Call | None = None

    def run(self, *, repair: bool = False) -> None:
        self.text.setPlainText("Repairing…" if repair else "Checking… (a large project takes a while)")
        self.repair_button.setEnabled(False)
        path = self.path
        self._thread = _Call(lambda: check_project(path, repair=repair), self)
        self._thread.finished_with.connect(self._done)
        self._thread.start()

    def _done(self, report: CheckReport | None, error: str) -> None:
        self.report = report
        if report is None:
            self.text.setPlainText(error)
            return
        self.text.setPlainText("\n".join(report.lines()))
        repairable = any(p.repairable for p in report.problems) and not report.repaired
        self.repair_button.setEnabled(self.can_repair and repairable)

    def done(self, result: int) -> None:  # noqa: D401 - QDialog's
        if self._thread is not None:
            self._thread.wait()
        super().done(result)


def offer_restore(parent: QWidget, project_path: Path, error: WorkbenchError) -> Path | None:
    """Say that the project is damaged; when a backup exists, offer to restore the newest. Returns where the
    replaced file went after a restore, or None when nothing was restored."""
    newest = newest_backup(project_path)
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Damaged project")
    box.setText(f"{project_path.name} is damaged and cannot be opened.")
    box.setInformativeText(str(error))
    restore_button = None
    if newest is not None:
        restore_button = box.addButton(f"Restore the newest backup ({newest.taken_at:%Y-%m-%d %H:%M})",
                                       QMessageBox.ButtonRole.AcceptRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    if restore_button is None or box.clickedButton() is not restore_button:
        return None
    return restore(newest.path, project_path) or project_path


def read_only_banner(path: Path) -> QLabel:
    banner = QLabel(
        f"<b>Read-only:</b> {path} (the file or its folder is not writable). You can look at everything; "
        "judging, editing, importing and training are off. Copy the project somewhere writable to work on it.")
    banner.setWordWrap(True)
    banner.setObjectName("readOnlyBanner")
    banner.setStyleSheet("background: #ffe08a; color: black; padding: 6px;")
    return banner
