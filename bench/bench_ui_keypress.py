"""Issue 3's key-press figure: from a verdict key press on the Compare page to the next item painted, on a
synthetic project of 1,000,000 comparisons (a copy of bench/synthetic's file; the cached one stays untouched).

    .venv/bin/python -m bench.bench_ui_keypress [--comparisons N] [--presses 500]

Each sample: QTest key press (the judgment is committed by the store), the queue serves the next item (5 %
retests), three panes get their text, and the whole window is repainted synchronously. Target: p99 < 16 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.machine import describe  # noqa: E402
from bench.synthetic import OUT, build  # noqa: E402
from workbench.store import copy_project  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comparisons", type=int, default=1_000_000)
    ap.add_argument("--presses", type=int, default=500)
    args = ap.parse_args(argv)
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from ui.main_window import MainWindow
    from ui.prefs import Prefs

    src = build(OUT / f"synthetic-{args.comparisons}.wbp", args.comparisons)
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "bench.wbp"
    copy_project(src, path)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    w = MainWindow(Prefs(tmp / "prefs.ini"))
    w.resize(1400, 860)
    w.show()
    t0 = time.perf_counter()
    w.open_project(path)
    page = w.show_page("compare")
    app.processEvents()
    open_s = time.perf_counter() - t0
    keys = [Qt.Key.Key_1, Qt.Key.Key_2, Qt.Key.Key_3, Qt.Key.Key_4, Qt.Key.Key_5, Qt.Key.Key_6, Qt.Key.Key_7, Qt.Key.Key_X]
    samples = []
    for i in range(args.presses + 20):
        before = page.current.id
        t = time.perf_counter()
        QTest.keyClick(page, keys[i % len(keys)])
        w.repaint()  # synchronous paint of the whole window with the next item
        dt = (time.perf_counter() - t) * 1000
        assert page.current.id != before
        if i >= 20:  # warm-up: first paints, font caches
            samples.append(dt)
    judged = page.project.conn.execute("SELECT COUNT(*) FROM comparison WHERE judged_at > ?", (w.session.started_iso,)).fetchone()[0]
    assert judged == args.presses + 20, judged
    p99 = statistics.quantiles(samples, n=100)[98]
    print(f"machine: {describe()}")
    print(f"project: {args.comparisons:,} comparisons; open + Compare page shown: {open_s * 1000:.0f} ms")
    print(
        f"key press → next item painted over {len(samples)} presses: p50 {statistics.median(samples):.2f} ms, "
        f"p99 {p99:.2f} ms, max {max(samples):.2f} ms (target p99 < 16 ms) -> {'PASS' if p99 < 16 else 'FAIL'}"
    )
    w.close()
    del w
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
