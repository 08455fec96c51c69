"""Whole-window checks: every page opens, the shortcut table and on-screen help agree, the window lock, the
dashboard's figures, and the UI never imports torch."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from ui.main_window import PAGES, MainWindow
from ui.shortcuts import SHORTCUTS
from workbench.errors import ProjectLockedError


def test_overview_shows_the_counts(window):
    page = window.show_page("overview")
    assert page.values["prompts"].text() == "6"
    assert page.values["pending"].text() == "6"
    assert "6 prompts" in window.counts_label.text() and "18 responses" in window.counts_label.text()
    assert window.guideline_label.text() == "Guideline v1"


def test_every_page_opens_by_key(qtbot, window):
    keys = {b.action: b.keys[0] for b in SHORTCUTS if b.scope == "global"}
    for name, *_rest in PAGES:
        combo = QKeySequence(keys[f"page_{name}"])[0]
        qtbot.keyClick(window.current_page(), combo.key(), combo.keyboardModifiers())
        assert window.current_page() is window.pages[name]


VISIT_EVERY_PAGE = """
import sys
from pathlib import Path
from PySide6.QtWidgets import QApplication
app = QApplication([])
from ui.main_window import PAGES, MainWindow
from ui.prefs import Prefs
w = MainWindow(Prefs(Path(sys.argv[2])))
w.show()
w.open_project(Path(sys.argv[1]))
for name, *_ in PAGES:
    if name == "dashboard":
        print("pyqtgraph before the dashboard:", "pyqtgraph" in sys.modules)
    w.show_page(name)
    app.processEvents()
print(sorted(m for m in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "engine") if m in sys.modules))
w.close()
del w
"""


def test_torch_is_never_imported_after_visiting_every_page(small_project_path, tmp_path):
    # In a fresh interpreter: the test session itself may have imported torch for other packages' tests.
    import os
    import subprocess

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    out = subprocess.run(
        [sys.executable, "-c", VISIT_EVERY_PAGE, str(small_project_path), str(tmp_path / "p.ini")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "pyqtgraph before the dashboard: False" in out.stdout  # imported lazily, for a fast start


def test_every_shortcut_has_a_handler_and_parses():
    from ui.pages.compare import ComparePage
    from ui.pages.history import HistoryPage
    from ui.pages.rank import RankPage
    from ui.pages.write import WritePage

    owners = {"compare": ComparePage, "flag": ComparePage, "rank": RankPage, "write": WritePage, "history": HistoryPage}
    global_actions = {"show_help", "toggle_guidelines", "open_project", "new_project"} | {f"page_{p[0]}" for p in PAGES}
    for b in SHORTCUTS:
        for k in b.keys:
            assert QKeySequence(k).toString() == k, k
        if b.scope == "global":
            assert b.action in global_actions
        else:
            assert hasattr(owners[b.scope], "act_" + b.action), b


def test_help_lists_every_shortcut(qtbot, window):
    qtbot.keyClick(window.current_page(), Qt.Key.Key_F1)
    text = window.help_dialog.view.toPlainText()
    for b in SHORTCUTS:
        assert b.help in text
        for k in b.keys:
            assert k in text
    window.help_dialog.close()


def test_guidelines_panel_toggles_and_versions(qtbot, window, db):
    page = window.show_page("compare")
    assert window.dock.isVisible()  # a new project's guidelines show on its first open
    qtbot.keyClick(page, "g")
    assert not window.dock.isVisible()
    qtbot.keyClick(page, "g")
    assert window.dock.isVisible()
    panel = window.guidelines
    panel.start_edit()
    panel.editor.setPlainText("# New rules\n\nBe strict.")
    assert panel.save() == 2
    assert window.guideline_label.text() == "Guideline v2"
    page.queue.config.retest_share = 0
    c = page.current
    qtbot.keyClick(page, "2")
    assert db.get_comparison(c.id).guideline_version == 2
    qtbot.keyClick(page, "g")
    assert not window.dock.isVisible()


def test_second_window_on_the_same_project_gets_a_clear_message(qtbot, window, prefs, small_project_path):
    other = MainWindow(prefs)
    qtbot.addWidget(other)
    with pytest.raises(ProjectLockedError, match="already open in another RLHF Workbench window"):
        other.open_project(small_project_path)
    assert other.session is None
    window.close()  # the lock goes with the window
    other.open_project(small_project_path)
    assert other.session is not None
    other.close()


def test_recent_projects_are_remembered(window, prefs, small_project_path):
    assert prefs.recent_projects()[0] == str(small_project_path.resolve())


def test_dashboard_figures(qtbot, window, db):
    page = window.show_page("compare")
    page.queue.config.retest_share = 0
    lefts = []
    for _ in range(4):
        lefts.append(page.left_side)
        if page.fold.folded:
            qtbot.keyClick(page, "r")  # the red-team item: nothing is judged unseen
        qtbot.keyClick(page, "2")  # always the left side
    dash = window.show_page("dashboard")
    assert dash.data["bias"].n == 4 and dash.data["bias"].left_picks == 4
    assert dash.data["bias"].p_value == pytest.approx(0.125)
    assert "left picked in 4 of 4" in dash.summary.text()
    assert sum(n for _, n in dash.data["hours"]) == 4
    assert set(dash.charts) == {"verdicts", "strengths", "flags", "per_hour"}


def test_break_reminder_after_harmful_items(qtbot, window, prefs):
    prefs.set("safety/break_after_harmful", 1)
    page = window.show_page("compare")
    page.queue.config.retest_share = 0
    qtbot.keyClick(page, "2")  # → the red-team item
    qtbot.keyClick(page, "r")
    assert window.break_label.isVisible() and "break" in window.break_label.text()


def test_preferences_dialog_saves_to_settings(qtbot, window, prefs):
    window.show_prefs()
    dlg = window.prefs_dialog
    dlg.hide_flagged.setChecked(False)
    dlg.break_minutes.setValue(25)
    dlg.retest_share.setValue(10)
    dlg.accept()
    assert prefs.get("safety/hide_flagged") is False
    assert prefs.get("safety/break_minutes") == 25
    assert prefs.get("queue/retest_share") == 0.1
    assert not window.hide_flagged_action.isChecked()
    # Folding is off now: the red-team item shows its text at once.
    page = window.show_page("compare")
    page.queue.config.retest_share = 0
    qtbot.keyClick(page, "2")
    assert not page.left_pane.folded


def test_welcome_screen_opens_a_recent_project(qtbot, prefs, small_project_path):
    prefs.add_recent(small_project_path)
    w = MainWindow(prefs)
    qtbot.addWidget(w)
    w.show()
    assert w.current_page() is w.placeholder
    assert w.placeholder.recent.item(0).text() == str(small_project_path.resolve())
    w.placeholder.recent.setFocus()
    qtbot.keyClick(w.placeholder.recent, Qt.Key.Key_Return)
    assert w.session is not None and w.session.project.path == small_project_path.resolve()
    w.close()


def test_python_m_ui_on_a_project_open_in_another_window_stays_on_welcome(small_project_path):
    import os
    import subprocess

    from ui.lock import WindowLock

    lock = WindowLock(small_project_path)
    try:
        # The probe quits once the window takes keys; without it the window would stay open, on Welcome.
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", RLHF_WORKBENCH_STARTUP_PROBE="1")
        out = subprocess.run([sys.executable, "-m", "ui", str(small_project_path)], capture_output=True, text=True, timeout=60, env=env)
    finally:
        lock.release()
    assert out.returncode == 0  # the window stays (returns to Welcome) instead of quitting
    message = f"{small_project_path}: already open in another RLHF Workbench window"
    assert message in out.stderr
    assert "welcome " in out.stdout and message in out.stdout  # the reason is on the Welcome screen


def test_opening_another_project_in_the_same_window(qtbot, window, tmp_path):
    from tests.ui.conftest import build_small_project

    page = window.show_page("compare")
    first_path = window.session.project.path
    other = build_small_project(tmp_path / "other.wbp", n=2)
    window.open_project(other)
    page2 = window.current_page()
    assert page2 is not page and window.session.project.path == other
    assert page2.current is not None and window.session.project.get_comparison(page2.current.id)
    assert "2 prompts" in window.counts_label.text()
    # The first project's lock was released with it.
    from ui.lock import WindowLock

    WindowLock(first_path).release()


def test_python_m_ui_opens_the_project_and_shows_its_counts(small_project_path, tmp_path):
    import os
    import subprocess

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", RLHF_WORKBENCH_STARTUP_PROBE="1", XDG_CONFIG_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "ui", str(small_project_path)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "counts 6 prompts · 18 responses · 0 judged · 6 pending" in out.stdout


def _inside_window(window, widget) -> tuple[int, int]:
    """(left, right) x of ``widget`` in the window's coordinates."""
    left = widget.mapTo(window, widget.rect().topLeft()).x()
    return left, left + widget.width()


@pytest.mark.parametrize("page_name", ["compare", "write", "history", "rank"])
def test_at_1024x700_the_guidelines_panel_leaves_the_page_on_screen(qtbot, window, page_name):
    window.resize(1024, 700)
    page = window.show_page(page_name)
    window.dock.hide()  # the guidelines a new project shows on its first open, closed: G opens them again
    window.toggle_guidelines()  # G
    assert window.dock.isVisible()
    qtbot.wait(20)
    app_width = window.width()
    assert app_width <= 1024  # nothing forces the window wider than the screen
    panes = {"compare": lambda: [page.left_pane, page.right_pane], "write": lambda: [page.editor, page.preview],
             "history": lambda: [page.table, page.detail], "rank": lambda: page.panes}[page_name]()
    dock_left, _ = _inside_window(window, window.dock)
    for pane in panes:
        left, right = _inside_window(window, pane)
        assert pane.isVisible() and pane.width() >= 120, (page_name, pane, pane.width())
        assert right <= dock_left, (page_name, pane, right, dock_left)  # not under the panel, not off-screen


def test_the_status_bar_overview_and_train_name_the_same_counts(qtbot, window, db):
    import re

    page = window.show_page("compare")
    page.queue.config.retest_share = 0
    qtbot.keyClick(page, "2")
    # Rows another connection adds (a generation job, say) show at the next action, not never.
    pid = db.get_comparison(page.current.id).prompt_id
    a, b = db.add_response(pid, "one more")[0], db.add_response(pid, "and another")[0]
    db.add_comparison(pid, a, b)
    # A ranking in a snapshot, then retracted: kept for the snapshot, but no longer a live ranking anywhere.
    rank = window.show_page("rank")
    qtbot.keyClick(rank, Qt.Key.Key_Return)
    (rk,) = db.ranking_ids()
    db.create_snapshot("preference", {"ranking": [rk]})
    db.retract("ranking", rk)
    write = window.show_page("write")
    qtbot.keyClicks(write.editor, "An answer.")
    qtbot.keyClick(write.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    stats = db.stats()
    bar = {k: int(v.replace(",", "")) for v, k in re.findall(r"([\d,]+) (judged|pending|rankings|demonstrations)",
                                                               window.counts_label.text())}
    overview = window.show_page("overview")
    shown = {k: int(overview.values[k].text().replace(",", "")) for k in ("judged", "pending", "rankings", "demonstrations")}
    assert bar == shown == {k: stats[k] for k in shown} == {"judged": 1, "pending": 6, "rankings": 0, "demonstrations": 1}
    from workbench.train_checks import data_counts

    counts = data_counts(db)
    assert (counts["judged"], counts["all_rankings"], counts["all_demonstrations"]) == (1, 0, 1)
