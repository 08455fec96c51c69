"""The Compare page driven by real key presses; the database is checked after each."""

from __future__ import annotations

from PySide6.QtCore import Qt

from ui.pages.compare import ComparePage


def _compare(window) -> ComparePage:
    page = window.show_page("compare")
    assert isinstance(page, ComparePage)
    return page


def _row(db, cid):
    c = db.get_comparison(cid)
    return c.verdict, c.strength, c.left_side, c.criteria, c.note, c.time_spent_ms, c.guideline_version


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
    verdict, strength, left_side, criteria, note, spent, _ = _row(db, c.id)
    right = "b" if left == "a" else "a"
    assert criteria == {"helpfulness": left, "harmlessness": right, "honesty": "tie"}
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
    assert db.stats()["judged"] == 0


def test_undo_after_snapshot_retracts(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    c = page.current
    qtbot.keyClick(page, "2")
    db.create_snapshot("preference", {"comparison": [c.id]})
    qtbot.keyClick(page, "u")
    assert db.get_comparison(c.id).retracted_at is not None
    # A fresh pending copy is shown in its place.
    assert page.current.id != c.id and page.current.response_a == c.response_a and page.current.verdict is None


def test_flag_by_keys_and_undo(qtbot, window, db):
    page = _compare(window)
    c = page.current
    rid_left = page.side_ids["left"]
    for k in ("f", "l", "2", "3"):  # flag → left → category 2 (violence) → high
        qtbot.keyClick(page, k)
    rows = [(f.response_id, f.category, f.severity, f.prompt_id) for f in db.flags()]
    assert rows == [(rid_left, "violence", "high", c.prompt_id)]
    assert page.current.id == c.id  # flagging does not judge
    assert _row(db, c.id)[0] is None
    assert "violence" in page.left_head.text()
    qtbot.keyClick(page, "u")
    assert db.flags() == []
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
    demo = db.demonstrations()
    assert [db.get_response(d.response_id).content for d in demo] == ["A much better answer."]
    wins = sorted((w.response_b, w.verdict) for w in db.comparisons(source="expert"))
    assert wins == sorted([(c.response_a, "a"), (c.response_b, "a")])
    assert not page.writer.isVisible()
    qtbot.keyClick(page, "u")
    assert db.demonstrations() == []
    assert db.comparisons(source="expert") == []


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
    assert db.retract("comparison", c.id) == "deleted"  # gone behind the window's back
    qtbot.keyClick(page, "2")
    assert f"no comparison with id {c.id}" in window.statusBar().currentMessage()
