"""Soak: SIGKILL the real window 100 times mid-judging; every judgment it acknowledged must be in the file and the
file must stay sound.

    .venv/bin/python -m bench.bench_kill_soak [--kills 100] [--comparisons 1000000]

Each round starts the window (``python -c DRIVER``, the real MainWindow on Qt's xcb platform under an Xvfb display
this script starts), goes to Compare and presses verdict keys; after each press returns (the judgment committed,
the next item on screen) the driver prints an ACK line. The script SIGKILLs the window after a random number of
acknowledgements (or at a random moment, often mid-press), then checks ``PRAGMA integrity_check`` and that every acknowledged judgment is
on disk with its verdict. The project is a copy of the synthetic benchmark project (bench/out), large enough that the
window's WAL, deferred checkpoints and queue queries are those of a real project.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import describe
from bench.synthetic import OUT, build
from tests.e2e.kill_driver import DRIVER
from workbench.store import Project



def start_xvfb() -> tuple[subprocess.Popen, str]:
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        return proc, ":" + f.readline().strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--comparisons", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    source = build(OUT / f"synthetic-{args.comparisons}.wbp", args.comparisons)
    tmp = Path(tempfile.mkdtemp(prefix="kill-soak-"))
    path = tmp / "soak.wbp"
    shutil.copy2(source, path)
    xvfb, display = start_xvfb()
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    rng = random.Random(args.seed)
    acked: dict[int, tuple[str, str | None]] = {}
    kills = lost = 0
    t0 = time.perf_counter()
    try:
        while kills < args.kills:
            proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(path), str(tmp / "prefs.ini")],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            ready = proc.stdout.readline().split()
            assert ready[:2] == ["READY", "xcb"], f"the window did not start on xcb: {ready}"
            # Half the kills after a number of acknowledgements, half at a random moment (often mid-press).
            by_count = rng.random() < 0.5
            limit = rng.randint(1, 60) if by_count else None
            deadline = time.monotonic() + rng.uniform(0.05, 1.0)
            seen = 0
            while True:
                if not by_count and time.monotonic() >= deadline:
                    break
                line = proc.stdout.readline()
                if not line or line.startswith(("DONE", "REFUSED")):
                    break
                _, cid, verdict, strength = line.split()
                acked[int(cid)] = (verdict, None if strength == "None" else strength)
                seen += 1
                if by_count and seen >= limit:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
            for line in proc.stdout.read().splitlines():
                if line.startswith("ACK"):
                    _, cid, verdict, strength = line.split()
                    acked[int(cid)] = (verdict, None if strength == "None" else strength)
            proc.wait(timeout=30)
            with Project.open(path) as p:
                problems = p.integrity_problems()
                wrong = [cid for cid, (v, s) in acked.items()
                         if (p.get_comparison(cid).verdict, p.get_comparison(cid).strength) != (v, s)]
            lost += len(wrong)
            if problems or wrong:
                print(f"kill {kills}: integrity {problems[:3]}, {len(wrong)} acknowledged judgments missing",
                      file=sys.stderr)
                break
            if kills % 10 == 0:
                print(f"{kills} kills, {len(acked):,} acknowledged judgments, all on disk", flush=True)
    finally:
        xvfb.terminate()
    print(f"machine: {describe()}")
    print(f"project: {args.comparisons:,} comparisons; {kills} SIGKILLs of the real window (xcb under Xvfb) in "
          f"{time.perf_counter() - t0:.0f} s; {len(acked):,} acknowledged judgments, {lost} missing; "
          f"integrity ok after every kill: {'yes' if not lost and kills == args.kills else 'NO'}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not lost and kills == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
