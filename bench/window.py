"""Shared parts of the window benchmarks (``bench_ui_keypress``, ``bench_history``): a scratch copy of the cached
synthetic project, the window opened offscreen on it, and a counter of the paint events of the widgets a figure
waits for."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_copy(comparisons: int) -> Iterator[tuple[Path, Path]]:
    """(project, folder): a copy of bench/synthetic's project of ``comparisons`` (built once, cached, untouched) in
    a scratch folder, removed afterwards with everything in it (the lock, the backup an older file gets when it is
    migrated on opening)."""
    from bench.synthetic import OUT, build
    from workbench.store import copy_project

    src = build(OUT / f"synthetic-{comparisons}.wbp", comparisons)
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "bench.wbp"
    copy_project(src, path)
    try:
        yield path, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
