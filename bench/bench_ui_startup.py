"""The window's cold-start figure: from launching ``python -m ui PROJECT`` to an interactive window (the project
open, the last page shown, the event loop running), measured from outside the process.

    .venv/bin/python -m bench.bench_ui_startup [--runs 7] [--project P]

The window prints the wall-clock time from its first event-loop turn (RLHF_WORKBENCH_STARTUP_PROBE) and quits.
Target: under 1.5 s. Without --project a small project (200 comparisons) is made in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import describe


BARE = "from PySide6.QtWidgets import QApplication, QMainWindow; a = QApplication([]); w = QMainWindow(); w.show(); w.repaint()"


def _small_project(path: Path) -> Path:
    from workbench.store import Project

    p = Project.create(path)
    for i in range(200):
        pid, _ = p.add_prompt([{"role": "user", "content": f"Question {i}?"}], source="bench")
        a, _ = p.add_response(pid, f"Answer A {i}")
        b, _ = p.add_response(pid, f"Answer B {i}")
        p.add_comparison(pid, a, b)
    p.close()
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--project", type=Path)
    ap.add_argument("--page", default="compare")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    project = args.project or _small_project(tmp / "startup.wbp")
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"), RLHF_WORKBENCH_STARTUP_PROBE="1",
               XDG_CONFIG_HOME=str(tmp / "config"))
    times = []
    for _ in range(args.runs + 1):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-m", "ui", str(project), "--page", args.page], capture_output=True, text=True, env=env, timeout=60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("interactive ")), None)
        if line is None:
            print(out.stderr, file=sys.stderr)
            return 1
        times.append(float(line.split()[1]) - t0)
    times = times[1:]  # the first run warms the OS file cache
    bare = []
    for _ in range(3):
        t0 = time.time()
        subprocess.run([sys.executable, "-c", BARE], env=env, timeout=60, capture_output=True)
        bare.append(time.time() - t0)
    med = statistics.median(times)
    print(f"machine: {describe()}")
    print(
        f"cold start to interactive window ({args.page} page) over {len(times)} runs: median {med * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms (target < 1500 ms) -> {'PASS' if med < 1.5 else 'FAIL'}"
    )
    print(f"reference now: an empty PySide6 QMainWindow shown and painted, process start to exit: median {statistics.median(bare) * 1000:.0f} ms")
    print(f"load average: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
