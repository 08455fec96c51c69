"""The window takes care of its project: automatic backups, the Backups dialog's restore, the offer to restore a
damaged file, a read-only project shown with a banner, a full disk during a judgment, and an import from the command
line while the window judges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from tests.ui.conftest import build_small_project
from workbench.backups import list_backups
from workbench.store import Project


def answer_box(button) -> None:
    """Click ``button`` of the next message box once it is on screen."""

    def click() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.isVisible():
            box.button(button).click()
        else:
            QTimer.singleShot(20, click)

    QTimer.singleShot(20, click)


def _compare(window):
    window.prefs.set("safety/hide_flagged", False)
    page = window.show_page("compare")
    page.queue.config.retest_share = 0
    return page


def test_a_backup_is_made_only_when_something_changed(qtbot, window):
    scheduler = window.backups
    assert scheduler.maybe_back_up() is False  # nothing changed since the project opened
    qtbot.keyClick(_compare(window), "1")
    with qtbot.waitSignal(scheduler.backed_up, timeout=30_000) as got:
        assert scheduler.maybe_back_up() is True
    backup = got.args[0]
    assert backup.reason == "auto" and [b.path for b in list_backups(window.session.project.path)] == [backup.path]
    with Project.open(backup.path) as copy:
        assert copy.stats()["judged"] == 1
    assert scheduler.maybe_back_up() is False


def test_restore_from_the_backups_dialog_reopens_the_project_as_it_was(qtbot, window):
    page = _compare(window)
    path = window.session.project.path
    with qtbot.waitSignal(window.backups.backed_up, timeout=30_000):
        window.back_up_now()
    qtbot.keyClick(page, "1")
    qtbot.keyClick(window.current_page(), "2")
    assert window.session.project.stats()["judged"] == 2
    window.show_backups()
    dialog = window.backups_dialog
    assert dialog.list.count() == 1
    answer_box(QMessageBox.StandardButton.Yes)
    dialog.ask_restore()
    qtbot.waitUntil(lambda: window.session is not None and window.session.project.stats()["judged"] == 0,
                    timeout=30_000)
    assert window.session is not None and window.session.project.path == path
    assert window.session.project.stats()["judged"] == 0
    replaced = [f for f in path.parent.glob(f"{path.name}.replaced-*") if not f.name.endswith(("-wal", "-shm"))]
    assert len(replaced) == 1
    with Project.open(replaced[0]) as old:
        assert old.stats()["judged"] == 2


def test_opening_a_damaged_project_offers_the_newest_backup(qtbot, prefs, tmp_path):
    from ui.main_window import MainWindow

    path = build_small_project(tmp_path / "p.wbp", n=200)
    from workbench.backups import back_up

    with Project.open(path) as p:
        back_up(p, "manual")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)
    w = MainWindow(prefs)
    qtbot.addWidget(w)
    seen = []

    def answer():
        box = QApplication.activeModalWidget()
        seen.append(box.text() + " " + box.informativeText())
        next(b for b in box.buttons() if b.text().startswith("Restore the newest backup")).click()

    QTimer.singleShot(0, answer)
    assert w.open_project_or_warn(path) is True
    assert "damaged" in seen[0] and "not an RLHF Workbench project" not in seen[0]
    assert w.session.project.stats()["prompts"] == 200
    w.close()


@pytest.fixture
def immutable():
    made = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o444)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("this file system cannot make a file read-only for root (chattr +i)")
        made.append(path)

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(0o644)


def test_a_read_only_project_opens_with_a_banner_and_refuses_changes(qtbot, prefs, tmp_path, immutable):
    from ui.main_window import MainWindow

    path = build_small_project(tmp_path / "ro.wbp")
    immutable(path)
    w = MainWindow(prefs)
    qtbot.addWidget(w)
    w.show()
    assert w.open_project_or_warn(path) is True
    assert w.banner is not None and w.banner.isVisible() and "Read-only" in w.banner.text()
    page = _compare(w)
    before = page.current.id
    qtbot.keyClick(page, "1")
    assert "read-only" in w.statusBar().currentMessage() and page.current.id == before
    with Project.open(path, read_only=True) as p:
        assert p.stats()["judged"] == 0
    w.close()


FULL_DISK_DRIVER = r"""
import json, sys
from pathlib import Path
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
app = QApplication([])
from ui.main_window import MainWindow
from ui.prefs import Prefs
prefs = Prefs(Path(sys.argv[2]))
prefs.set("safety/hide_flagged", False)
w = MainWindow(prefs)
w.show()
w.open_project(Path(sys.argv[1]))
page = w.show_page("compare")
page.queue.config.retest_share = 0
flag = Path(sys.argv[3])
def press(key):
    before = page.current.id
    QTest.keyClick(w.current_page(), key)
    return {"before": before, "after": page.current.id, "message": w.statusBar().currentMessage()}
flag.touch()            # the disk is full from here on
full = press("1")
flag.unlink()           # space was freed
freed = press("1")
print(json.dumps({"full": full, "freed": freed}), flush=True)
w.close()
"""


def test_a_full_disk_during_a_judgment_says_so_and_keeps_the_item(tmp_path):
    from tests.faults import enospc_library

    path = build_small_project(tmp_path / "p.wbp")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LD_PRELOAD": str(enospc_library(tmp_path)),
           "WB_ENOSPC_WHILE": str(tmp_path / "disk-is-full"), "WB_ENOSPC_MATCH": str(path)}
    done = subprocess.run([sys.executable, "-c", FULL_DISK_DRIVER, str(path), str(tmp_path / "prefs.ini"),
                           str(tmp_path / "disk-is-full")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    full, freed = result["full"], result["freed"]
    assert "the disk is full" in full["message"] and "nothing of this change was saved" in full["message"]
    assert full["after"] == full["before"]  # the item stays on screen, to be judged again
    assert freed["before"] == full["before"] and freed["after"] != freed["before"]
    with Project.open(path) as p:
        assert p.integrity_problems() == [] and p.stats()["judged"] == 1
        assert p.get_comparison(full["before"]).verdict is not None


def test_an_import_from_the_cli_while_the_window_judges_both_land(qtbot, window, tmp_path):
    page = _compare(window)
    path = window.session.project.path
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Imported question {i}?", "chosen": "Good. " * 40,
                                        "rejected": "Bad. " * 40}) + "\n" for i in range(6000)))
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "import", str(path), str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    judged = []
    for key in "12345":
        c = page.current
        qtbot.keyClick(window.current_page(), key)
        judged.append(c.id)
        assert "locked" not in window.statusBar().currentMessage()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    with Project.open(path) as p:
        assert all(p.get_comparison(cid).verdict for cid in judged)
        assert p.stats()["comparisons"] == 6 + 6000
