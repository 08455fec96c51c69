"""Start the window: ``python -m ui [PROJECT]`` (what ``workbench gui`` runs).

Without a PROJECT the demo project is opened (``workbench.demo.ensure_demo_project``, imported lazily); when that
is unavailable the window asks for a project instead.

``--smoke-test`` opens the real window on the project, waits until the window system shows it, checks that Qt runs
on the platform that was asked for (``QT_QPA_PLATFORM``, else what the session offers: xcb under X11, wayland under
Wayland) rather than a fallback, prints one line and exits 0; on any failure it exits non-zero saying why. The
test command runs it on xcb under Xvfb, so a machine that lacks a system library the window needs fails there.
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
    parser.add_argument("--smoke-test", action="store_true",
                        help="open the real window, check the platform it runs on, then exit (0: it works)")
    args = parser.parse_args(argv)
    if args.smoke_test:
        from .system_check import missing_libraries, report

        missing = missing_libraries() if expected_platform() == "xcb" else []
        if missing:
            print("smoke test failed: the window cannot start on X11 (Qt's xcb platform):\n" + report(missing),
                  file=sys.stderr)
            return 3

    from PySide6.QtWidgets import QApplication

    from workbench.errors import DamagedProjectError, WorkbenchError

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
        except DamagedProjectError as e:
            print(str(e), file=sys.stderr)
            # A damaged project: offer the newest backup; without a restore the window stays on its first screen.
            if app.platformName() == "offscreen" or not window.open_project_or_warn(Path(path)):
                if app.platformName() == "offscreen" or args.smoke_test:
                    return 2
        except WorkbenchError as e:
            print(str(e), file=sys.stderr)
            if args.smoke_test:
                return 2
            # The window stays, on Welcome, with the reason (e.g. the project is open in another window).
            window.placeholder.message.setText(f"{e}\n\nOpen another project (Ctrl+O) or create one (Ctrl+N).")
    if args.page and window.session is not None:
        window.show_page(args.page)
    if args.smoke_test:
        return smoke_test(app, window)
    if os.environ.get("RLHF_WORKBENCH_STARTUP_PROBE"):
        # For bench/bench_ui_startup.py: once the event loop runs (the window is painted and takes keys), print
        # the wall-clock time and quit.
        from PySide6.QtCore import QTimer

        def probe() -> None:
            window.repaint()
            print(f"interactive {time.time():.6f}", flush=True)
            print(f"counts {window.counts_label.text()}", flush=True)
            if window.session is None:
                print(f"welcome {window.placeholder.message.text()!r}", flush=True)
            app.quit()

        QTimer.singleShot(0, probe)
    return app.exec()


def expected_platform() -> str | None:
    """The Qt platform this process should run on: ``QT_QPA_PLATFORM`` when set, else xcb under X11 and wayland
    under Wayland on Linux; None where Qt picks its own (macOS, Windows)."""
    asked = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0].split(";")[0].strip()
    if asked:
        return asked
    if sys.platform.startswith("linux"):
        if os.environ.get("WAYLAND_DISPLAY"):
            return "wayland"
        if os.environ.get("DISPLAY"):
            return "xcb"
    return None


def smoke_test(app, window, timeout_s: float = 20.0) -> int:
    """Wait until ``window`` is exposed on screen, then check the platform; 0 when all is well."""
    from PySide6.QtCore import QDeadlineTimer

    deadline = QDeadlineTimer(int(timeout_s * 1000))
    handle = window.windowHandle()
    while not (handle is not None and handle.isExposed()) and not deadline.hasExpired():
        app.processEvents()
        time.sleep(0.01)
        handle = window.windowHandle()
    platform, expected = app.platformName(), expected_platform()
    problems = []
    if handle is None or not handle.isExposed():
        problems.append(f"the window was not shown within {timeout_s:.0f} s")
    if expected and platform != expected:
        problems.append(f"Qt runs on the {platform!r} platform, not on {expected!r} as asked")
    size = window.size()
    window.close()
    if problems:
        print("smoke test failed: " + "; ".join(problems), file=sys.stderr)
        return 1
    title = window.windowTitle()
    print(f"smoke test ok: the window \"{title}\" was shown on the {platform} platform at "
          f"{size.width()}x{size.height()}")
    return 0
