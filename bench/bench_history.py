"""The History page's figure: from showing the page to a usable list (its first page painted and a key working) on
a synthetic project of 1,000,000 comparisons (a copy of bench/synthetic's file; the cached one stays untouched).

    .venv/bin/python -m bench.bench_history [--comparisons N] [--visits 10]

Each visit: the window is on Compare; the History page is shown (the first visit also builds it), the event loop
runs until the list has painted, then a Down key press moves to the next row and the event loop runs until the
detail pane shows that row. The figure is the wall time of the whole visit. Then the list is scrolled to its end
page after page, and the time of each page read from the store (``fetchMore``) is reported. Target: a usable list
in under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench.machine import describe  # noqa: E402
from bench.window import open_window, paint_counter, scratch_copy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--comparisons", type=int, default=1_000_000)
    ap.add_argument("--visits", type=int, default=10)
    ap.add_argument("--pages", type=int, default=50, help="pages to scroll through after the visits")
    args = ap.parse_args(argv)
    with scratch_copy(args.comparisons) as (path, tmp):
        return _run(args, path, tmp)


def _run(args, path: Path, tmp: Path) -> int:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    # An older file is migrated (and backed up) on opening, outside the figure.
    app, w, open_s = open_window(path, tmp)
    counter = paint_counter()
    watched: set[int] = set()
    visits = []
    page = None
    for _ in range(args.visits):
        w.show_page("compare")
        app.processEvents()
        painted = counter.n
        t = time.perf_counter()
        page = w.show_page("history")
        for widget in (page.table.viewport(), page.detail.browser.viewport()):
            if id(widget) not in watched:  # built on the first visit: watch its paints from now on
                widget.installEventFilter(counter)
                watched.add(id(widget))
        while counter.n <= painted:  # the list's first page painted
            app.processEvents()
        first = page.selected()
        QTest.keyClick(page.table, Qt.Key.Key_Down)
        painted = counter.n
        while page.shown is None or page.shown is first or counter.n <= painted:
            app.processEvents()
        visits.append((time.perf_counter() - t) * 1000)
        assert page.shown is page.model.rows[page.table.currentIndex().row()], "the key did not open the next row"
    rows_first = len(page.model.rows)
    fetches = []
    for _ in range(args.pages):
        if not page.model.canFetchMore():
            break
        t = time.perf_counter()
        page.model.fetchMore()
        fetches.append((time.perf_counter() - t) * 1000)
    page.table.scrollToBottom()
    app.processEvents()
    stats = page.project.stats()
    print(f"machine: {describe()}")
    print(f"project: {stats['comparisons']:,} comparisons, {stats['judged']:,} judged; open + Compare shown: "
          f"{open_s * 1000:.0f} ms (includes the migration of the synthetic file)")
    print(f"History shown → first page painted and Down opened the next row: first visit (page built) "
          f"{visits[0]:.1f} ms; later visits p50 {statistics.median(visits[1:] or visits):.1f} ms, "
          f"max {max(visits[1:] or visits):.1f} ms (target < 100 ms) -> {'PASS' if max(visits) < 100 else 'FAIL'}")
    if fetches:
        print(f"scrolling: {len(fetches)} more pages of {rows_first} rows read, each p50 {statistics.median(fetches):.1f} ms,"
              f" max {max(fetches):.1f} ms ({len(page.model.rows):,} rows listed)")
    print(f"load average: {os.getloadavg()[0]:.1f}")
    w.close()
    del w
    return 0


if __name__ == "__main__":
    sys.exit(main())
