"""Start the window: ``python -m ui [PROJECT]`` (what ``workbench gui`` runs).

Without a PROJECT the demo project is opened (``workbench.demo.ensure_demo_project``, imported lazily); when that
is unavailable the window asks for a project instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui", description="Open the RLHF Workbench window.")
    parser.add_argument("project", nargs="?", type=Path, help="project file (default: the demo project)")
    parser.add_argument("--page", help="page to show first (overview, compare, rank, write, history, dashboard)")
    args = parser.parse_args(argv)

    from PySide6.QtWidgets import QApplication, QMessageBox

    from workbench.errors import WorkbenchError

    from .main_window import MainWindow
    from .prefs import APP, ORG

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    window = MainWindow()
    path = args.project
    if path is None:
        try:
            from workbench.demo import ensure_demo_project

            path = ensure_demo_project()
        except Exception as e:  # the demo is a convenience: any failure falls back to asking
            print(f"demo project unavailable ({e}); open or create a project", file=sys.stderr)
            window.placeholder.message.setText(
                f"The demo project could not be made ({e}).\nOpen a project (Ctrl+O) or create one (Ctrl+N)."
            )
            path = None
    window.show()
    if path is not None:
        try:
            window.open_project(Path(path))
        except WorkbenchError as e:
            print(str(e), file=sys.stderr)
            if app.platformName() != "offscreen":
                QMessageBox.critical(window, "RLHF Workbench", str(e))
            return 2
    if args.page and window.session is not None:
        window.show_page(args.page)
    if os.environ.get("RLHF_WORKBENCH_STARTUP_PROBE"):
        # For bench/bench_ui_startup.py: once the event loop runs (the window is painted and takes keys), print
        # the wall-clock time and quit.
        from PySide6.QtCore import QTimer

        def probe() -> None:
            window.repaint()
            print(f"interactive {time.time():.6f}", flush=True)
            print(f"counts {window.counts_label.text()}", flush=True)
            app.quit()

        QTimer.singleShot(0, probe)
    return app.exec()
