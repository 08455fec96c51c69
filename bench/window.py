"""Shared parts of the window benchmarks (``bench_ui_keypress``, ``bench_history``): the window opened offscreen on
a copy of a synthetic project, and a counter of the paint events of the widgets a figure waits for."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def open_window(path: Path, prefs_dir: Path, page: str = "compare"):
    """(app, window, seconds): the main window, 1400×860, with ``path`` open on ``page`` and the events run; the
    seconds from opening the project to that page shown."""
    from PySide6.QtWidgets import QApplication

    from ui.main_window import MainWindow
    from ui.prefs import Prefs

    app = QApplication.instance() or QApplication(sys.argv[:1])
    w = MainWindow(Prefs(prefs_dir / "prefs.ini"))
    w.resize(1400, 860)
    w.show()
    t0 = time.perf_counter()
    w.open_project(path)
    w.show_page(page)
    app.processEvents()
    return app, w, time.perf_counter() - t0


def paint_counter():
    """An event filter counting paint events (``counter.n``) of every widget it is installed on."""
    from PySide6.QtCore import QEvent, QObject

    class PaintCounter(QObject):
        n = 0

        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.Paint:
                self.n += 1
            return False

    return PaintCounter()
