"""Kill the real window mid-session, many times: every judgment it acknowledged is in the file afterwards and
``PRAGMA integrity_check`` says ok. Also checks that the window lock left by a killed window is taken over.

A child process opens the real MainWindow (offscreen) on the project, goes to Compare and presses verdict keys
through QTest; after each press returns (the judgment committed, the next item on screen) it prints an ACK line.
The parent SIGKILLs it at a random moment, then checks the file.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ui.conftest import build_small_project

DRIVER = r"""
import sys
from pathlib import Path
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
app = QApplication([])
from ui.main_window import MainWindow
from ui.prefs import Prefs
w = MainWindow(Prefs(Path(sys.argv[2])))
w.show()
w.open_project(Path(sys.argv[1]))
page = w.show_page("compare")
keys = {"1": ("left", "strong"), "2": ("left", "clear"), "6": ("right", "clear"), "4": ("tie", None), "x": ("both_bad", None)}
i = 0
print("READY", flush=True)
while page.current is not None:
    key = "1264x"[i % 5]
    i += 1
    c, left = page.current, page.left_side
    side, strength = keys[key]
    verdict = {"left": left, "right": "b" if left == "a" else "a"}.get(side, side)
    if page.fold.folded:
        QTest.keyClick(page, "r")  # the red-team item: nothing is judged unseen
    QTest.keyClick(page, key)
    print(f"ACK {c.id} {verdict} {strength}", flush=True)
print("DONE", flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_session_loses_no_acknowledged_judgment(tmp_path: Path):
    path = build_small_project(tmp_path / "kill.wbp", n=3000)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    rng = random.Random(7)
    acked: dict[int, tuple[str, str | None]] = {}
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(path), str(tmp_path / "prefs.ini")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        assert proc.stdout.readline().strip() == "READY"
        # The kill moment is counted in acknowledgements, not seconds: a timed window let a fast machine judge all
        # 3,000 items in six launches, leaving nothing to kill. 12 launches of at most 220 judgments cannot run out.
        kill_after = rng.randint(3, 220)
        done = False
        seen = 0
        while seen < kill_after:
            line = proc.stdout.readline()
            if not line or line.startswith("DONE"):
                done = True
                break
            _, cid, verdict, strength = line.split()
            acked[int(cid)] = (verdict, None if strength == "None" else strength)
            seen += 1
        if not done:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        # Lines printed before the kill are acknowledgements too.
        for line in proc.stdout.read().splitlines():
            if line.startswith("ACK"):
                _, cid, verdict, strength = line.split()
                acked[int(cid)] = (verdict, None if strength == "None" else strength)
        proc.wait(timeout=30)
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = dict(
                ((cid, (v, s)) for cid, v, s in conn.execute("SELECT id, verdict, strength FROM comparison WHERE verdict IS NOT NULL"))
            )
        finally:
            conn.close()
        missing = {cid: want for cid, want in acked.items() if rows.get(cid) != want}
        assert not missing, f"acknowledged but not on disk after kill {kills}: {missing}"
        if done:
            break
    print(f"{kills} kills, {len(acked)} acknowledged judgments, all on disk")
    assert kills == 12
    assert len(acked) >= 12 * 3
