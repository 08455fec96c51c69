"""The main window: a sidebar of pages, the guidelines dock, menus for projects, and a status bar with the
counts, the session timer, the guideline version and the safety counters.

Pages are built the first time they are shown (the Dashboard imports pyqtgraph only then), which keeps the cold
start small.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.backups import restore
from workbench.errors import DamagedProjectError, WorkbenchError
from workbench.loop import first_open
from workbench.store import Project

from .guidelines import GuidelinesPanel
from .help import HelpDialog
from .lock import WindowLock
from .prefs import Prefs
from .project_care import BackupScheduler, BackupsDialog, CheckDialog, offer_restore, read_only_banner
from .session import Session
from .shortcuts import SHORTCUTS, KeyRouter
from .welcome import Welcome

# (name, title, module, class): the sidebar, in order; Ctrl+1… follow this order.
PAGES = (
    ("overview", "Overview", "ui.pages.overview", "OverviewPage"),
    ("compare", "Compare", "ui.pages.compare", "ComparePage"),
    ("rank", "Rank", "ui.pages.rank", "RankPage"),
    ("write", "Write", "ui.pages.write", "WritePage"),
    ("history", "History", "ui.pages.history", "HistoryPage"),
    ("dashboard", "Dashboard", "ui.pages.dashboard", "DashboardPage"),
    ("train", "Train", "ui.pages.train", "TrainPage"),
    ("runs", "Runs", "ui.pages.runs", "RunsPage"),
    ("generate", "Generate", "ui.pages.generate", "GeneratePage"),
    ("playground", "Playground", "ui.pages.playground", "PlaygroundPage"),
    ("evaluation", "Evaluation", "ui.pages.evaluation", "EvaluationPage"),
)


class MainWindow(QMainWindow):
    project_opened = Signal(str)

    def __init__(self, prefs: Prefs | None = None):
        super().__init__()
        self.prefs = prefs or Prefs()
        self.session: Session | None = None
        self.lock: WindowLock | None = None
        self.pages: dict[str, QWidget] = {}
        self.setWindowTitle("RLHF Workbench")
        self.resize(1280, 800)
        geometry = self.prefs.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)

        self.sidebar = QListWidget()
        self.sidebar.setFixedWidth(150)
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        page_keys = {b.action: b.keys[0] for b in SHORTCUTS if b.scope == "global" and b.action.startswith("page_")}
        for i, (name, title, _, _) in enumerate(PAGES):
            self.sidebar.addItem(f"{title}")
            self.sidebar.item(i).setToolTip(page_keys.get(f"page_{name}", ""))
        self.sidebar.currentRowChanged.connect(self._row_changed)
        self.stack = QStackedWidget()
        self.placeholder = Welcome()
        self.placeholder.open_requested.connect(self.open_project_dialog)
        self.placeholder.new_requested.connect(self.new_project_dialog)
        self.placeholder.recent_chosen.connect(lambda p: self.open_project_or_warn(Path(p)))
        self.placeholder.set_recent(self.prefs.recent_projects())
        self.stack.addWidget(self.placeholder)
        self.sidebar.setEnabled(False)
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.banner_slot = QVBoxLayout()  # a read-only project's banner goes here
        outer.addLayout(self.banner_slot)
        lay = QHBoxLayout()
        lay.addWidget(self.sidebar)
        lay.addWidget(self.stack, 1)
        outer.addLayout(lay, 1)
        self.setCentralWidget(central)
        self.banner: QLabel | None = None
        self.backups: BackupScheduler | None = None

        self.dock = QDockWidget("Guidelines", self)
        self.dock.setObjectName("guidelines")
        self.dock.setAllowedAreas(Qt.DockWidgetArea.RightDockWidgetArea | Qt.DockWidgetArea.LeftDockWidgetArea)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.guidelines: GuidelinesPanel | None = None

        self._build_status_bar()
        self._build_menus()
        self.router = KeyRouter(self, lambda: ["global"], self._global_handler)
        self.clock = QTimer(self)
        self.clock.setInterval(1000)
        self.clock.timeout.connect(self._tick)
        self._break_shown = False
        self.idle_checkpoint = QTimer(self)
        self.idle_checkpoint.setSingleShot(True)
        self.idle_checkpoint.setInterval(2000)
        self.idle_checkpoint.timeout.connect(self.checkpoint)

    # ------------------------------------------------------------------ building
    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.counts_label = QLabel()
        self.timer_label = QLabel()
        self.guideline_label = QLabel()
        self.harmful_label = QLabel()
        self.break_label = QLabel()
        self.break_label.setStyleSheet("background: #ffe08a; color: black; padding: 0 6px;")
        self.break_label.hide()
        self.counts_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # see ComparePage
        sb.addWidget(self.counts_label, 1)
        for w in (self.break_label, self.harmful_label, self.guideline_label, self.timer_label):
            sb.addPermanentWidget(w)

    def _build_menus(self) -> None:
        m = self.menuBar().addMenu("&Project")
        for text, slot, key in (
            ("&New…", self.new_project_dialog, "Ctrl+N"),
            ("&Open…", self.open_project_dialog, "Ctrl+O"),
        ):
            a = QAction(text, self)
            a.setShortcut(QKeySequence(key))
            a.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)  # the key router handles the key itself
            a.triggered.connect(slot)
            m.addAction(a)
        self.recent_menu = m.addMenu("Open &recent")
        self._fill_recent()
        m.addSeparator()
        self.project_actions: list[QAction] = []
        for text, slot in (("&Back up now", self.back_up_now), ("Bac&kups…", self.show_backups),
                           ("&Check the project…", self.show_check), (None, None),
                           ("&Import…", self.show_import), ("E&xport…", self.show_export),
                           ("&Held-out prompts…", self.show_heldout)):
            if text is None:
                m.addSeparator()
                continue
            a = QAction(text, self)
            a.triggered.connect(slot)
            a.setEnabled(False)
            m.addAction(a)
            self.project_actions.append(a)
        m.addSeparator()
        self.hide_flagged_action = QAction("&Hide flagged and red-team content", self, checkable=True)
        self.hide_flagged_action.setChecked(bool(self.prefs.get("safety/hide_flagged")))
        self.hide_flagged_action.toggled.connect(self._set_hide_flagged)
        m.addAction(self.hide_flagged_action)
        prefs_action = QAction("&Preferences…", self)
        prefs_action.triggered.connect(self.show_prefs)
        m.addAction(prefs_action)
        quit_action = QAction("&Quit", self)
        quit_action.triggered.connect(self.close)
        m.addAction(quit_action)
        h = self.menuBar().addMenu("&Help")
        a = QAction("&Keyboard shortcuts (F1)", self)
        a.triggered.connect(self.show_help)
        h.addAction(a)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.prefs.recent_projects():
            a = QAction(path, self)
            a.triggered.connect(lambda _=False, p=path: self.open_project_or_warn(Path(p)))
            self.recent_menu.addAction(a)
        self.recent_menu.setEnabled(bool(self.prefs.recent_projects()))

    # ------------------------------------------------------------------ projects
    def open_project(self, path: Path, *, create: bool = False) -> None:
        """Open (or create) a project in this window. Raises WorkbenchError (e.g. ProjectLockedError)."""
        path = Path(path)
        lock = WindowLock(path)
        try:
            project = Project.create(path) if create else Project.open(path, read_only=None)
        except BaseException:
            lock.release()
            raise
        self.close_project()
        self.lock = lock
        show_guidelines = first_open(project)  # (before the backup scheduler notes the file as unchanged)
        self.session = Session(project, self.prefs, self)
        self.backups = BackupScheduler(project, parent=self)
        self.backups.backed_up.connect(lambda b: self.statusBar().showMessage(f"Backed up: {b.describe()}", 8000))
        self.backups.failed.connect(lambda e: self.statusBar().showMessage(f"Backup failed: {e}", 15000))
        for a in self.project_actions:
            a.setEnabled(True)
        if project.read_only:
            self.banner = read_only_banner(path)
            self.banner_slot.addWidget(self.banner)
            self.banner.show()
        # Checkpoint the WAL when the expert pauses, not inside a key press: SQLite's automatic checkpoint runs in
        # whichever commit crosses 1000 pages and took ~0.4 s on a 1M-comparison file. The engine's own
        # connection keeps its automatic checkpoints.
        project.defer_wal_checkpoints()
        self.session.changed.connect(self._on_changed)
        self.session.changed.connect(lambda _d: self.idle_checkpoint.start())
        self.session.refresh.connect(self.refresh_counts)
        self.session.harmful_seen_changed.connect(self._on_harmful)
        self.guidelines = GuidelinesPanel(self.session)
        self.guidelines.saved.connect(lambda v: self.refresh_counts())
        self.dock.setWidget(self.guidelines)
        self.prefs.add_recent(path)
        self._fill_recent()
        self.sidebar.setEnabled(True)
        self.setWindowTitle(f"{path.name} — RLHF Workbench")
        self.refresh_counts()
        self._on_harmful(0)
        self.clock.start()
        self._tick()
        last = str(self.prefs.settings.value("last_page", "overview"))
        self.show_page(last if last in {p[0] for p in PAGES} else "overview")
        if show_guidelines:
            self.dock.show()  # a new project's guidelines, before the first judgment
        self.project_opened.emit(str(path))

    def open_project_or_warn(self, path: Path, *, create: bool = False) -> bool:
        try:
            self.open_project(path, create=create)
            return True
        except DamagedProjectError as e:
            try:
                restored = offer_restore(self, Path(path), e)
            except WorkbenchError as again:
                QMessageBox.warning(self, "RLHF Workbench", str(again))
                return False
            return restored is not None and self.open_project_or_warn(Path(path))
        except WorkbenchError as e:
            QMessageBox.warning(self, "RLHF Workbench", str(e))
            return False

    # ------------------------------------------------------------------ backups and checks
    def back_up_now(self) -> None:
        if self.backups is not None and self.backups.back_up("manual"):
            self.statusBar().showMessage("Backing up…", 5000)

    def show_backups(self) -> None:
        if self.session is None or self.backups is None:
            return
        dlg = BackupsDialog(self.session.project, self.backups, self.restore_backup, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.backups_dialog = dlg

    def show_check(self) -> None:
        if self.session is None:
            return
        dlg = CheckDialog(self.session.project.path, self, can_repair=not self.session.project.read_only)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        dlg.run()
        self.check_dialog = dlg

    def show_import(self) -> None:
        from .exchange_dialogs import ImportDialog

        if self.session is not None:
            dlg = self._open_dialog(ImportDialog(self.session.project.path, self), "import_dialog")
            dlg.start_button.setEnabled(not self.session.project.read_only)
            dlg.done_with.connect(lambda report: self._data_changed() if report is not None else None)

    def show_export(self) -> None:
        from .exchange_dialogs import ExportDataDialog

        if self.session is not None:
            dlg = self._open_dialog(ExportDataDialog(self.session.project.path, self), "export_dialog")
            dlg.done_with.connect(lambda report: self._data_changed() if report is not None else None)

    def show_heldout(self) -> None:
        from .heldout_dialog import HeldOutDialog

        if self.session is not None:
            self._open_dialog(HeldOutDialog(self.session.project, self), "heldout_dialog").changed.connect(
                self._data_changed)

    def _open_dialog(self, dlg, name: str):
        """Show a modeless dialog that deletes itself on close, kept as ``self.<name>`` (tests reach it there)."""
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        setattr(self, name, dlg)
        return dlg

    def _data_changed(self) -> None:
        """An import, an export (it records a snapshot) or a change of split: recount and redraw the page shown."""
        self.refresh_counts()
        page = self.current_page()
        if hasattr(page, "activate") and page is not self.placeholder:
            page.activate()

    def restore_backup(self, backup: str) -> bool:
        """Close the project, put ``backup`` in its place (the replaced file is kept beside it), open it again."""
        if self.session is None:
            return False
        path = self.session.project.path
        self.close_project()
        try:
            replaced = restore(backup, path)
        except WorkbenchError as e:
            QMessageBox.warning(self, "RLHF Workbench", str(e))
            self.open_project_or_warn(path)
            return False
        opened = self.open_project_or_warn(path)
        if opened and replaced is not None:
            self.statusBar().showMessage(f"Restored {Path(backup).name}; the replaced file is kept as {replaced.name}",
                                         15000)
        return opened

    def open_project_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open project", "", "RLHF Workbench projects (*.wbp *.db *.sqlite);;All files (*)")
        if path:
            self.open_project_or_warn(Path(path))

    def new_project_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Create project", "project.wbp", "RLHF Workbench projects (*.wbp)")
        if path:
            self.open_project_or_warn(Path(path), create=True)

    def checkpoint(self) -> None:
        if self.session is not None and not self.session.project.read_only:
            self.session.project.checkpoint_wal("PASSIVE")

    def close_project(self) -> None:
        # Runs keep going in their own process; the next start re-attaches to them or shows how they ended.
        manager = getattr(self.session, "_run_manager", None) if self.session is not None else None
        if manager is not None:
            manager.detach_all()
        for page in self.pages.values():
            self.stack.removeWidget(page)
            page.deleteLater()
        self.pages.clear()
        if self.guidelines is not None:
            self.dock.setWidget(QWidget())
            self.guidelines.deleteLater()
            self.guidelines = None
        self.idle_checkpoint.stop()
        if self.backups is not None:
            self.backups.stop()
            self.backups.deleteLater()
            self.backups = None
        if self.banner is not None:
            self.banner.deleteLater()
            self.banner = None
        for a in self.project_actions:
            a.setEnabled(False)
        if self.session is not None:
            self.checkpoint()
            self.session.project.close()
            self.session.deleteLater()
            self.session = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        self.clock.stop()
        self.placeholder.set_recent(self.prefs.recent_projects())
        self.stack.setCurrentWidget(self.placeholder)
        self.sidebar.setEnabled(False)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        train = self.pages.get("train")
        if train is not None and not train.confirm_close():  # a run is going: cancel it, let it finish, or stay
            event.ignore()
            return
        self.prefs.settings.setValue("window/geometry", self.saveGeometry())
        self.close_project()
        super().closeEvent(event)

    # ------------------------------------------------------------------ pages
    def page(self, name: str) -> QWidget:
        """The page called ``name``, built on first use."""
        if name not in self.pages:
            _, _, module, cls = next(p for p in PAGES if p[0] == name)
            page = getattr(importlib.import_module(module), cls)(self.session)
            self.pages[name] = page
            self.stack.addWidget(page)
        return self.pages[name]

    def show_page(self, name: str) -> QWidget:
        if self.session is None:
            return self.placeholder
        row = [p[0] for p in PAGES].index(name)
        if self.sidebar.currentRow() != row:
            self.sidebar.setCurrentRow(row)  # calls back into _row_changed
        elif self.stack.currentWidget() is not self.pages.get(name):
            self._row_changed(row)  # same row, but the page was dropped with the previous project
        return self.pages[name]

    def current_page(self) -> QWidget:
        return self.stack.currentWidget()

    def _row_changed(self, row: int) -> None:
        if self.session is None or row < 0:
            return
        name = PAGES[row][0]
        page = self.page(name)
        self.stack.setCurrentWidget(page)
        self.prefs.settings.setValue("last_page", name)
        page.activate()

    # ------------------------------------------------------------------ status bar
    def refresh_counts(self) -> None:
        if self.session is None:
            return
        s = self.session.project.stats()
        self._counts = {k: s[k] for k in ("prompts", "responses", "judged", "pending", "rankings", "demonstrations", "flags")}
        self._render_counts()
        self.guideline_label.setText(f"Guideline v{s['guideline_version']}")

    def _render_counts(self) -> None:
        c = self._counts
        self.counts_label.setText(
            f"{c['prompts']:,} prompts · {c['responses']:,} responses · {c['judged']:,} judged · {c['pending']:,} pending"
            f" · {c['rankings']:,} rankings · {c['demonstrations']:,} demonstrations · {c['flags']:,} flags"
            f" · this session: {self.session.actions if self.session else 0}"
        )

    def _on_changed(self, delta: dict) -> None:
        self.refresh_counts()  # the trigger-kept counters, read again: the same numbers as Overview and Train

    def _on_harmful(self, n: int) -> None:
        self.harmful_label.setText(f"Harmful seen: {n}")
        self._check_break()

    def _tick(self) -> None:
        if self.session is None:
            return
        secs = int(self.session.elapsed())
        self.timer_label.setText(f"Session {secs // 3600:d}:{secs // 60 % 60:02d}:{secs % 60:02d}")
        self._check_break()

    def _check_break(self) -> None:
        if self.session is None or self._break_shown:
            return
        minutes = self.prefs.get("safety/break_minutes")
        harmful = self.prefs.get("safety/break_after_harmful")
        if self.session.elapsed() >= minutes * 60 or self.session.harmful_seen >= harmful:
            self._break_shown = True
            self.break_label.setText(
                f"Time for a break: {int(self.session.elapsed() // 60)} min, {self.session.harmful_seen} harmful items this session"
            )
            self.break_label.show()

    # ------------------------------------------------------------------ global shortcuts
    def _global_handler(self, action: str):
        if action.startswith("page_"):
            name = action[5:]
            return lambda _k: self.show_page(name)
        return {
            "show_help": lambda _k: self.show_help(),
            "toggle_guidelines": lambda _k: self.toggle_guidelines(),
            "open_project": lambda _k: self.open_project_dialog(),
            "new_project": lambda _k: self.new_project_dialog(),
        }.get(action)

    def toggle_guidelines(self) -> None:
        if self.session is None:
            return
        self.dock.setVisible(not self.dock.isVisible())

    def _set_hide_flagged(self, on: bool) -> None:
        if self.prefs.get("safety/hide_flagged") != on:
            self.prefs.set("safety/hide_flagged", on)
        self._prefs_changed()

    def _prefs_changed(self) -> None:
        page = self.current_page()
        if hasattr(page, "prefs_changed"):
            page.prefs_changed()

    def show_prefs(self) -> None:
        from .prefs_dialog import PrefsDialog

        dlg = PrefsDialog(self.prefs, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.accepted.connect(lambda: self.hide_flagged_action.setChecked(bool(self.prefs.get("safety/hide_flagged"))))
        dlg.accepted.connect(self._prefs_changed)
        dlg.show()
        self.prefs_dialog = dlg

    def show_help(self) -> None:
        dlg = HelpDialog(self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.help_dialog = dlg
