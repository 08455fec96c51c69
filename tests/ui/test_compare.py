"""The Compare page driven by real key presses; the database is checked after each."""

from __future__ import annotations

from PySide6.QtCore import Qt

from ui.pages.compare import ComparePage


def _compare(window) -> ComparePage:
    page = window.show_page("compare")
    assert isinstance(page, ComparePage)
    return page


def _row(db, cid):
    return db.conn.execute(
        "SELECT verdict, strength, left_side, criteria, note, time_spent_ms, guideline_version FROM comparison WHERE id = ?", (cid,)
    ).fetchone()


def test_left_key_records_the_response_shown_on_the_left(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    for key, strength in (("1", "strong"), ("2", "clear"), ("3", "slight")):
        c, left = page.current, page.left_side
        qtbot.keyClick(page, key)
        verdict, s, left_side, *_ , gv = _row(db, c.id)
        assert (verdict, s, left_side) == (left, strength, left)
        assert gv == 1
        assert page.current.id != c.id


def test_right_tie_and_both_bad(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    c, left = page.current, page.left_side
    qtbot.keyClick(page, "7")
    assert _row(db, c.id)[:3] == ("b" if left == "a" else "a", "strong", left)
    c = page.current
    qtbot.keyClick(page, "t")
    assert _row(db, c.id)[:2] == ("tie", None)
    c = page.current
    qtbot.keyClick(page, "x")
    assert _row(db, c.id)[:2] == ("both_bad", None)
    c = page.current
    qtbot.keyClick(page, Qt.Key.Key_Right)
    assert _row(db, c.id)[1] == "clear"


def test_sides_are_shuffled(qtbot, window):
    page = _compare(window)
    seen = set()
    for _ in range(30):
        page.show_item(page.current)
        seen.add(page.left_side)
    assert seen == {"a", "b"}


def test_criteria_note_and_time_spent(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    c, left = page.current, page.left_side
    qtbot.keyClick(page, "h")               # helpfulness → left
    qtbot.keyClick(page, "m")
    qtbot.keyClick(page, "m")               # harmlessness → right
    qtbot.keyClick(page, "o")
    qtbot.keyClick(page, "o")
    qtbot.keyClick(page, "o")               # honesty → tie
    qtbot.keyClick(page, "n")
    assert page.note_edit.hasFocus() or page.note_edit.isVisible()
    qtbot.keyClicks(page.note_edit, "a note")  # typed letters stay in the editor, no verdict
    assert _row(db, c.id)[0] is None
    qtbot.keyClick(page.note_edit, Qt.Key.Key_Return)
    qtbot.keyClick(page, "2")
    import json

    verdict, strength, left_side, criteria, note, spent, _ = _row(db, c.id)
    right = "b" if left == "a" else "a"
    assert json.loads(criteria) == {"helpfulness": left, "harmlessness": right, "honesty": "tie"}
    assert note == "a note"
    assert spent is not None and spent >= 0


def test_skip_then_undo(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    first = page.current
    qtbot.keyClick(page, "s")
    assert page.current.id != first.id
    assert _row(db, first.id)[0] is None
    second = page.current
    qtbot.keyClick(page, "4")
    assert _row(db, second.id)[0] == "tie"
    qtbot.keyClick(page, "u")
    assert _row(db, second.id)[0] is None
    assert page.current.id == second.id
    qtbot.keyClick(page, "z", Qt.KeyboardModifier.ControlModifier)  # nothing left to undo: no change
    assert db.conn.execute("SELECT COUNT(*) FROM comparison WHERE verdict IS NOT NULL").fetchone()[0] == 0


def test_undo_after_snapshot_retracts(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    c = page.current
    qtbot.keyClick(page, "2")
    db.create_snapshot("preference", {"comparison": [c.id]})
    qtbot.keyClick(page, "u")
    assert db.conn.execute("SELECT retracted_at IS NOT NULL, verdict FROM comparison WHERE id = ?", (c.id,)).fetchone()[0] == 1
    # A fresh pending copy is shown in its place.
    assert page.current.id != c.id and page.current.response_a == c.response_a and page.current.verdict is None


def test_flag_by_keys_and_undo(qtbot, window, db):
    page = _compare(window)
    c = page.current
    rid_left = page.side_ids["left"]
    for k in ("f", "l", "2", "3"):  # flag → left → category 2 (violence) → high
        qtbot.keyClick(page, k)
    rows = db.conn.execute("SELECT response_id, category, severity, prompt_id FROM safety_flag").fetchall()
    assert rows == [(rid_left, "violence", "high", c.prompt_id)]
    assert page.current.id == c.id  # flagging does not judge
    assert _row(db, c.id)[0] is None
    assert "violence" in page.left_head.text()
    qtbot.keyClick(page, "u")
    assert db.conn.execute("SELECT COUNT(*) FROM safety_flag").fetchone()[0] == 0
    qtbot.keyClick(page, "f")
    qtbot.keyClick(page, "p")
    qtbot.keyClick(page, Qt.Key.Key_Escape)
    assert page.flag_state is None
    qtbot.keyClick(page, "0")  # back in compare scope: 0 = both bad
    assert _row(db, c.id)[0] == "both_bad"


def test_write_better_answer(qtbot, window, db):
    page = _compare(window)
    c = page.current
    qtbot.keyClick(page, "w")
    assert page.writer.isVisible()
    qtbot.keyClicks(page.writer, "A much better answer.")
    qtbot.keyClick(page.writer, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    demo = db.conn.execute("SELECT d.id, r.content FROM demonstration d JOIN response r ON r.id = d.response_id").fetchall()
    assert [d[1] for d in demo] == ["A much better answer."]
    wins = db.conn.execute(
        "SELECT response_b, verdict FROM comparison WHERE source = 'expert' ORDER BY response_b"
    ).fetchall()
    assert wins == sorted([(c.response_a, "a"), (c.response_b, "a")])
    assert not page.writer.isVisible()
    qtbot.keyClick(page, "u")
    assert db.conn.execute("SELECT COUNT(*) FROM demonstration").fetchone()[0] == 0
    assert db.conn.execute("SELECT COUNT(*) FROM comparison WHERE source = 'expert'").fetchone()[0] == 0


def test_red_team_content_is_folded_until_revealed(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    qtbot.keyClick(page, "2")  # prompt 0 → prompt 1 is tagged red-team
    assert "red-team" in db.get_prompt(page.current.prompt_id).tags
    assert page.left_pane.folded and page.right_pane.folded
    assert page.left_pane.shown_text() == ""
    qtbot.keyClick(page, "r")
    assert not page.left_pane.folded and "Response" in page.left_pane.shown_text()
    assert window.session.harmful_seen == 1


def test_filters_by_source_and_tag(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    page.source_box.select("beta")
    page._filters_changed()
    page.queue.config.retest_share = 0
    seen = set()
    for _ in range(3):
        seen.add(page.current.source)
        qtbot.keyClick(page, "4")
    assert seen == {"beta"}
    assert page.current is None and page.empty_label.isVisible()


def test_status_bar_counts_follow_judgments(qtbot, window):
    page = _compare(window)
    page.queue.config.retest_share = 0
    assert "0 judged" in window.counts_label.text()
    qtbot.keyClick(page, "2")
    assert "1 judged" in window.counts_label.text() and "5 pending" in window.counts_label.text()


def test_switching_folding_off_redraws_the_same_item(qtbot, window):
    page = _compare(window)
    page.queue.config.retest_share = 0
    qtbot.keyClick(page, "2")  # → the red-team item, folded
    assert page.left_pane.folded
    c, left = page.current, page.left_side
    qtbot.keyClick(page, "h")
    window.hide_flagged_action.setChecked(False)
    assert not page.left_pane.folded and page.current.id == c.id and page.left_side == left
    assert page.criteria["helpfulness"] == "left"


def test_a_refusal_from_the_store_is_shown_not_raised(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    c = page.current
    db.conn.execute("DELETE FROM comparison WHERE id = ?", (c.id,))  # gone behind the window's back
    qtbot.keyClick(page, "2")
    assert f"no comparison with id {c.id}" in window.statusBar().currentMessage()
