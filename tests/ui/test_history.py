"""The History page: search and filters over real rows; change and retract from the page."""

from __future__ import annotations

from PySide6.QtCore import Qt

from ui.pages.history import HistoryPage


def _judge_all(db):
    ids = []
    while (c := db.next_pending()) is not None:
        db.judge(c.id, "a" if c.id % 2 else "both_bad", strength="clear" if c.id % 2 else None, left_side="a")
        ids.append(c.id)
    return ids


def _row_of(page, kind, item_id):
    return page.model.row_of(kind, item_id)


def _open(page, kind, item_id):
    page.table.selectRow(_row_of(page, kind, item_id))
    assert (page.shown.kind, page.shown.id) == (kind, item_id)


def test_search_and_filters(qtbot, window, db):
    ids = _judge_all(db)
    db.add_flag(db.get_comparison(ids[0]).prompt_id, "violence", "low", note="graphic")
    page = window.show_page("history")
    assert isinstance(page, HistoryPage)
    assert len(page.rows) == len(ids) + 1
    page.kind_box.setCurrentIndex(page.kind_box.findData("flag"))
    assert [r.kind for r in page.rows] == ["flag"]
    page.kind_box.setCurrentIndex(0)
    page.verdict_box.setCurrentIndex(page.verdict_box.findData("both_bad"))
    assert {r.detail.split(" · ")[0] for r in page.rows} == {"both bad"}
    page.verdict_box.setCurrentIndex(page.verdict_box.findData("left"))  # left_side "a", verdict "a": the left
    assert {r.id for r in page.rows} == {i for i in ids if i % 2}
    page.verdict_box.setCurrentIndex(0)
    qtbot.keyClick(page, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(page.search, "question 3")
    page.reload()
    assert {r.prompt_id for r in page.rows} == {db.get_comparison(ids[3]).prompt_id}
    page.search.clear()
    page.tag_box.select("red-team")
    assert len(page.rows) == 1


def test_change_verdict_and_retract_with_delete_twice(qtbot, window, db):
    ids = _judge_all(db)
    page = window.show_page("history")
    _open(page, "comparison", ids[0])
    assert page.verdict_row.isVisible()
    page.verdict_edit.setCurrentIndex(page.verdict_edit.findData("right"))
    page.strength_edit.setCurrentIndex(page.strength_edit.findData("strong"))
    page.change_btn.click()
    changed = db.get_comparison(ids[0])
    assert (changed.verdict, changed.strength) == ("b", "strong")  # shown on the left: a, so the right is b
    assert page.shown.id == ids[0] and page.selected().id == ids[0]
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    assert ids[0] in db.comparisons_by_id([ids[0]])  # armed only
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    assert ids[0] not in db.comparisons_by_id([ids[0]])


def test_change_verdict_in_a_snapshot_keeps_the_old_row(qtbot, window, db):
    ids = _judge_all(db)
    db.create_snapshot("preference", {"comparison": [ids[0]]})
    page = window.show_page("history")
    _open(page, "comparison", ids[0])
    page.verdict_edit.setCurrentIndex(page.verdict_edit.findData("tie"))
    page.change_btn.click()
    old = db.get_comparison(ids[0])
    assert (old.verdict, old.retracted_at is not None) == ("a", True)
    new = db.comparisons(source=old.source)[-1]
    assert new.id != ids[0] and (new.response_a, new.response_b, new.verdict) == (old.response_a, old.response_b, "tie")
    assert (page.shown.id, page.selected().id) == (new.id, new.id)  # the pane and the highlight follow the change


def test_retract_never_moves_an_edit_to_another_item(qtbot, window, db):
    ids = _judge_all(db)
    db.create_snapshot("preference", {"comparison": [ids[2]]})  # in a snapshot: kept, marked retracted
    page = window.show_page("history")
    _open(page, "comparison", ids[2])
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    assert db.get_comparison(ids[2]).retracted_at is not None
    # The pane, the highlight and the edits all stay on the retracted item.
    assert (page.shown.id, page.shown.retracted) == (ids[2], True) and page.selected().id == ids[2]
    assert "retracted" in page.detail_head.text() and not page.verdict_row.isVisible()
    before = {i: db.get_comparison(i).verdict for i in ids}
    page.change_selected()
    assert {i: db.get_comparison(i).verdict for i in ids} == before
    # Not in a snapshot: deleted; the pane empties and nothing else is edited or highlighted.
    _open(page, "comparison", ids[3])
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    assert ids[3] not in db.comparisons_by_id([ids[3]])
    assert page.shown is None and page.selected() is None
    page.change_selected()
    assert {i: db.get_comparison(i).verdict for i in ids if i != ids[3]} == {i: v for i, v in before.items() if i != ids[3]}


def test_a_changed_verdict_stays_on_screen_and_highlighted(qtbot, window, db):
    ids = _judge_all(db)
    page = window.show_page("history")
    oldest = ids[0]
    _open(page, "comparison", oldest)
    assert page.model.row_of("comparison", oldest) == len(ids) - 1  # at the bottom
    page.verdict_edit.setCurrentIndex(page.verdict_edit.findData("tie"))
    page.change_btn.click()
    # Judged just now: the row moves to the top, and the highlight and the pane move with it.
    assert page.model.row_of("comparison", oldest) == 0
    assert page.shown.id == oldest and page.selected().id == oldest
    page.verdict_edit.setCurrentIndex(page.verdict_edit.findData("both_bad"))
    page.change_btn.click()  # a second change applies to the same item
    assert db.get_comparison(oldest).verdict == "both_bad"
    assert [db.get_comparison(i).verdict for i in ids[1:]] == ["both_bad" if i % 2 == 0 else "a" for i in ids[1:]]


def test_history_says_what_was_on_the_left_and_on_the_right(qtbot, window, db):
    page = window.show_page("compare")
    page.queue.config.retest_share = 0
    c, left = page.current, page.left_side
    qtbot.keyClick(page, "1")  # left much better
    # "Response A ..." / "Response B ...": the first words survive Markdown rendering
    left_text = db.get_response(c.response_a if left == "a" else c.response_b).content[:10]
    right_text = db.get_response(c.response_b if left == "a" else c.response_a).content[:10]
    history = window.show_page("history")
    _open(history, "comparison", c.id)
    assert history.shown.detail == "left much better"
    shown = history.detail.shown_text()
    assert shown.index("Left") < shown.index(left_text) < shown.index("Right") < shown.index(right_text)
    assert "preferred" in shown[shown.index("Left"):shown.index(left_text)]
    assert "Verdict: left much better" in shown
    assert history.verdict_edit.currentData() == "left"


def test_history_folds_harmful_content_and_counts_exposure_once(qtbot, window, db):
    ids = _judge_all(db)
    red = next(i for i in ids if "red-team" in db.get_prompt(db.get_comparison(i).prompt_id).tags)
    flagged = ids[0]
    db.add_flag(db.get_comparison(flagged).prompt_id, "self_harm", "high", response_id=db.get_comparison(flagged).response_b)
    page = window.show_page("history")
    for cid in (red, flagged):
        _open(page, "comparison", cid)
        assert page.detail.folded and page.detail.shown_text() == ""
    assert window.session.harmful_seen == 0
    page.table.setFocus()
    qtbot.keyClick(page.table, "r")
    assert not page.detail.folded and "Response" in page.detail.shown_text()
    assert window.session.harmful_seen == 1
    _open(page, "comparison", red)
    qtbot.keyClick(page.table, "r")
    _open(page, "comparison", flagged)
    qtbot.keyClick(page.table, "r")
    assert window.session.harmful_seen == 2  # each item once


def test_the_list_is_read_a_page_at_a_time(qtbot, window, db):
    from ui.pages.history import PAGE_ROWS

    pid, _ = db.add_prompt([{"role": "user", "content": "many"}])
    rids = [db.add_response(pid, f"answer {i}")[0] for i in range(31)]
    n = 0
    for i in range(len(rids)):
        for j in range(i + 1, len(rids)):
            if n < PAGE_ROWS * 2 + 10:
                db.add_comparison(pid, rids[i], rids[j], verdict="tie")
                n += 1
    page = window.show_page("history")
    assert len(page.rows) == PAGE_ROWS and page.model.canFetchMore()
    assert "more as you scroll" in page.count_label.text()
    page.table.scrollToBottom()
    qtbot.waitUntil(lambda: len(page.rows) == PAGE_ROWS * 2)
    page.table.scrollToBottom()
    qtbot.waitUntil(lambda: len(page.rows) == n)
    assert not page.model.canFetchMore() and page.count_label.text() == f"{n} item(s)"
    assert len({(r.kind, r.id) for r in page.rows}) == n
