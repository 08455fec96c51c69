"""The window driver of the SIGKILL tests and the kill soak: the real MainWindow on the project given, Compare shown,
verdict keys pressed through QTest; after each press that the window took (the judgment committed, the next item on
screen) it prints ``ACK <comparison id> <verdict> <strength>``. Run as ``python -c DRIVER PROJECT PREFS_INI``."""

DRIVER = r"""
import sys
from pathlib import Path
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
app = QApplication([])
from ui.main_window import MainWindow
from ui.prefs import Prefs
prefs = Prefs(Path(sys.argv[2]))
prefs.set("safety/hide_flagged", False)  # every item judgeable without a reveal first
w = MainWindow(prefs)
w.show()
w.open_project(Path(sys.argv[1]))
page = w.show_page("compare")
page.queue.config.retest_share = 0
print("READY", app.platformName(), flush=True)
keys = {"1": ("left", "strong"), "2": ("left", "clear"), "6": ("right", "clear"), "4": ("tie", None), "x": ("both_bad", None)}
i = 0
while page.current is not None:
    key = "1264x"[i % 5]
    i += 1
    c, left = page.current, page.left_side
    side, strength = keys[key]
    verdict = {"left": left, "right": "b" if left == "a" else "a"}.get(side, side)
    QTest.keyClick(w.current_page(), key)
    if page.current is not None and page.current.id == c.id:
        print("REFUSED", w.statusBar().currentMessage(), flush=True)  # not taken: not acknowledged
        break
    print(f"ACK {c.id} {verdict} {strength}", flush=True)
print("DONE", flush=True)
"""
