"""The Compare page driven by real key presses; the database is checked after each."""

from __future__ import annotations

from PySide6.QtCore import Qt

from ui.pages.compare import ComparePage


def _compare(window) -> ComparePage:
    page = window.show_page("compare")
    assert isinstance(page, ComparePage)
    return page


def _judge(qtbot, page, key):
    """Press a verdict key on the item shown, revealing it first when it is folded (nothing is judged unseen)."""
    if page.fold.folded:
        qtbot.keyClick(page, "r")
    qtbot.keyClick(page, key)


def _row(db, cid):
    c = db.get_comparison(cid)
    return c.verdict, c.strength, c.left_side, c.criteria, c.note, c.time_spent_ms, c.guideline_version


def test_left_key_records_the_response_shown_on_the_left(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    for key, strength in (("1", "strong"), ("2", "clear"), ("3", "slight")):
        c, left = page.current, page.left_side
        _judge(qtbot, page, key)
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
    _judge(qtbot, page, "t")
    assert _row(db, c.id)[:2] == ("tie", None)
    c = page.current
    _judge(qtbot, page, "x")
    assert _row(db, c.id)[:2] == ("both_bad", None)
    c = page.current
    _judge(qtbot, page, Qt.Key.Key_Right)
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
    _judge(qtbot, page, "4")
    assert _row(db, second.id)[0] == "tie"
    qtbot.keyClick(page, "u")
    assert _row(db, second.id)[0] is None
    assert page.current.id == second.id
    qtbot.keyClick(page, "z", Qt.KeyboardModifier.ControlModifier)  # then the skip before it
    assert page.current.id == first.id
    qtbot.keyClick(page, "u")  # nothing left to undo: no change
    assert page.current.id == first.id and "Nothing to undo" in page.feedback.text()
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
        _judge(qtbot, page, "4")
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


def _to_red_team_item(qtbot, page):
    page.queue.config.retest_share = 0
    qtbot.keyClick(page, "2")  # prompt 0 → prompt 1, tagged red-team: both responses folded
    assert page.left_pane.folded and page.right_pane.folded


def test_a_verdict_on_folded_content_is_refused_until_revealed(qtbot, window, db):
    page = _compare(window)
    _to_red_team_item(qtbot, page)
    c = page.current
    for key in ("1", "4", "x", "w", "c"):
        qtbot.keyClick(page, key)
        assert page.current.id == c.id and _row(db, c.id)[0] is None
    assert "Reveal the hidden content first" in window.statusBar().currentMessage()
    assert not page.writer.isVisible() and db.flags() == []
    assert window.session.harmful_seen == 0 and "Harmful seen: 0" in window.harmful_label.text()
    qtbot.keyClick(page, "r")  # revealing is seeing: it counts
    assert window.session.harmful_seen == 1 and "Harmful seen: 1" in window.harmful_label.text()
    left = page.left_side
    qtbot.keyClick(page, "1")
    assert _row(db, c.id)[:3] == (left, "strong", left)


def test_u_after_s_undoes_the_skip_not_the_judgment_before(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    judged = page.current
    qtbot.keyClick(page, "3")
    skipped = page.current
    qtbot.keyClick(page, "s")
    after = page.current
    qtbot.keyClick(page, "u")
    assert page.current.id == skipped.id  # the skip is taken back: the skipped item is here again
    assert _row(db, judged.id)[0] is not None  # the judgment before it stands
    _judge(qtbot, page, "4")
    assert page.current.id == after.id  # the item shown after the skip is not passed over


def _long_conversation(db) -> int:
    turns = []
    for i in range(6):
        turns.append({"role": "user", "content": f"Turn {i} of the user.\n\n" + "A long paragraph of context. " * 30})
        turns.append({"role": "assistant", "content": f"Reply {i}.\n\n" + "More words of an answer. " * 30})
    turns.append({"role": "user", "content": "THE LAST QUESTION: and so what now?"})
    pid, _ = db.add_prompt(turns, source="chat")
    a, _ = db.add_response(pid, "first answer")
    b, _ = db.add_response(pid, "second answer")
    return db.add_comparison(pid, a, b, source="chat")


def _visible_text(pane) -> str:
    browser = pane.browser
    top = browser.cursorForPosition(browser.viewport().rect().topLeft()).position()
    bottom = browser.cursorForPosition(browser.viewport().rect().bottomRight()).position()
    return browser.toPlainText()[top:bottom + 1]


def test_a_multi_turn_prompt_opens_at_its_last_turn_and_keys_scroll_it(qtbot, window, db):
    _long_conversation(db)
    window.dock.hide()  # the guidelines a new project shows on its first open, closed
    page = _compare(window)
    page.source_box.select("chat")
    page._filters_changed()
    qtbot.wait(20)
    assert "THE LAST QUESTION" in _visible_text(page.prompt_pane)
    bar = page.prompt_pane.browser.verticalScrollBar()
    at_last = bar.value()
    assert at_last > 0
    qtbot.keyClick(page, "[")  # earlier turns
    assert bar.value() < at_last and "THE LAST QUESTION" not in _visible_text(page.prompt_pane)
    qtbot.keyClick(page, Qt.Key.Key_PageDown, Qt.KeyboardModifier.ShiftModifier)
    assert bar.value() > at_last - bar.pageStep()
    # The prompt box is resizable: a splitter shares the height with the responses.
    sizes = page.rows.sizes()
    page.rows.setSizes([sizes[0] + 150, sizes[1] - 150])
    assert page.rows.sizes()[0] > sizes[0]


def test_each_response_switches_to_plain_text_by_its_key(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    left, right = page.left_pane, page.right_pane
    assert left.markdown and right.markdown
    qtbot.keyClick(page, "l", Qt.KeyboardModifier.AltModifier)
    assert not left.markdown and right.markdown
    content = db.get_response(page.side_ids["left"]).content
    assert left.shown_text() == content  # the Markdown source as it is, "- step one" and all
    qtbot.keyClick(page, "r", Qt.KeyboardModifier.AltModifier)
    assert not right.markdown and right.plain_button.isChecked()
    right.plain_button.click()  # the pane's own button does the same
    assert right.markdown
    qtbot.keyClick(page, "2")
    assert page.left_pane.markdown  # the next item shows as the preferences say


def test_buttons_do_what_their_keys_do(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    c, left = page.current, page.left_side
    page.buttons["left_strong"].click()
    assert _row(db, c.id)[:3] == (left, "strong", left)
    red = page.current
    page.buttons["right_clear"].click()  # the red-team item is folded: refused, as the key is
    assert _row(db, red.id)[0] is None and "Reveal the hidden content first" in page.feedback.text()
    page.buttons["reveal"].click()
    assert not page.fold.folded and window.session.harmful_seen == 1
    page.buttons["tie"].click()
    assert _row(db, red.id)[0] == "tie"
    page.buttons["undo"].click()
    assert _row(db, red.id)[0] is None and page.current.id == red.id
    page.buttons["skip"].click()
    assert page.current.id != red.id
    assert page.buttons["left_strong"].long_text.endswith(" 1") and page.buttons["skip"].long_text.endswith(" S")


def test_session_progress_toward_the_target(qtbot, window, prefs):
    prefs.set("session/target", 3)
    page = _compare(window)
    page.queue.config.retest_share = 0
    assert (page.progress.value(), page.progress.maximum()) == (0, 3)
    qtbot.keyClick(page, "2")
    assert page.progress.value() == 1 and page.progress.text() == "this session: 1 of 3"
    qtbot.keyClick(page, "u")
    assert page.progress.value() == 0


def test_checked_nothing_harmful_by_key_and_undo(qtbot, window, db):
    page = _compare(window)
    page.queue.config.retest_share = 0
    c = page.current
    db.add_flag(c.prompt_id, "violence", "low", response_id=page.side_ids["left"])
    page.prefs_changed()  # redraw: the left response is flagged (and folded) now
    qtbot.keyClick(page, "r")
    qtbot.keyClick(page, "c")
    labels = [f for f in db.flags() if not f.present]
    assert {f.response_id for f in labels} == {page.side_ids["right"]}  # only the response without a flag
    assert len(labels) == len(db.categories()) and "right response" in page.feedback.text()
    assert _row(db, c.id)[0] is None  # a check is not a verdict
    qtbot.keyClick(page, "u")
    assert [f for f in db.flags() if not f.present] == []


def test_the_reward_model_score_gap_is_shown_on_the_item(qtbot, window, db, tmp_path):
    from workbench.reward_scores import store_scores

    page = _compare(window)
    page.queue.config.retest_share = 0
    assert page.gap_label.text() == ""
    c = page.current
    run = db.create_run("score", {"reward_model": str(tmp_path / "rm")})
    store_scores(db, run, {c.response_a: 0.5, c.response_b: 0.125})
    db.update_run(run, status="done")
    page.prefs_changed()
    assert "score gap 0.375" in page.gap_label.text()
    assert "rm" in page.gap_label.text()
