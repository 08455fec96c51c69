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
    assert {r.detail.split(" ")[0] for r in page.rows} == {"both_bad"}
    page.verdict_box.setCurrentIndex(0)
    qtbot.keyClick(page, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(page.search, "question 3")
    page.reload()
    assert {r.prompt_id for r in page.rows} == {db.get_comparison(ids[3]).prompt_id}
    page.search.clear()
    page.tag_box.setCurrentIndex(page.tag_box.findData("red-team"))
    assert len(page.rows) == 1


def test_change_verdict_and_retract_with_delete_twice(qtbot, window, db):
    ids = _judge_all(db)
    page = window.show_page("history")
    row = next(i for i, r in enumerate(page.rows) if r.id == ids[0] and r.kind == "comparison")
    page.table.selectRow(row)
    assert page.verdict_row.isVisible()
    page.verdict_edit.setCurrentIndex(page.verdict_edit.findData("b"))
    page.strength_edit.setCurrentIndex(page.strength_edit.findData("strong"))
    page.change_btn.click()
    changed = db.get_comparison(ids[0])
    assert (changed.verdict, changed.strength) == ("b", "strong")
    row = next(i for i, r in enumerate(page.rows) if r.id == ids[0])
    page.table.selectRow(row)
    page.table.setFocus()
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    assert ids[0] in db.comparisons_by_id([ids[0]])  # armed only
    qtbot.keyClick(page.table, Qt.Key.Key_Delete)
    assert ids[0] not in db.comparisons_by_id([ids[0]])


def test_change_verdict_in_a_snapshot_keeps_the_old_row(qtbot, window, db):
    ids = _judge_all(db)
    db.create_snapshot("preference", {"comparison": [ids[0]]})
    page = window.show_page("history")
    page.table.selectRow(next(i for i, r in enumerate(page.rows) if r.id == ids[0] and r.kind == "comparison"))
    page.verdict_edit.setCurrentIndex(page.verdict_edit.findData("tie"))
    page.change_btn.click()
    old = db.get_comparison(ids[0])
    assert (old.verdict, old.retracted_at is not None) == ("a", True)
    new = db.comparisons(source=old.source)[-1]
    assert new.id != ids[0] and (new.response_a, new.response_b, new.verdict) == (old.response_a, old.response_b, "tie")
