"""The Rank page driven by keys; rankings checked in the database."""

from __future__ import annotations

from PySide6.QtCore import Qt

from ui.pages.rank import RankPage


def _ranks(db):
    return {k: db.get_ranking(k) for k in db.ranking_ids()}


def test_rank_by_keys_with_a_tie(qtbot, window, db):
    page = window.show_page("rank")
    assert isinstance(page, RankPage)
    pid = page.prompt_id
    ids = page.response_ids
    assert len(ids) == 3
    for k in ("3", "="):
        qtbot.keyClick(page, k)
    qtbot.keyClick(page, "1")          # [3] = [1] share first place
    qtbot.keyClick(page, Qt.Key.Key_Return)
    (rk, entries), = _ranks(db).items()
    assert entries == {ids[2]: 1, ids[0]: 1, ids[1]: 2}
    assert db.ranking_prompt_id(rk) == pid
    assert page.prompt_id != pid


def test_backspace_skip_and_undo(qtbot, window, db):
    page = window.show_page("rank")
    ids = page.response_ids
    for k in ("2", "1"):
        qtbot.keyClick(page, k)
    qtbot.keyClick(page, Qt.Key.Key_Backspace)   # take [1] back
    qtbot.keyClick(page, "3")
    qtbot.keyClick(page, Qt.Key.Key_Enter)
    (_, entries), = _ranks(db).items()
    assert entries == {ids[1]: 1, ids[2]: 2, ids[0]: 3}
    first = page.prompt_id
    qtbot.keyClick(page, "s")
    assert page.prompt_id != first
    qtbot.keyClick(page, "u")
    assert _ranks(db) == {}


def test_drag_reorder_is_what_gets_saved(qtbot, window, db):
    page = window.show_page("rank")
    ids = page.response_ids
    page.order.model().moveRow(page.order.model().index(2, 0).parent(), 2, page.order.model().index(0, 0).parent(), 0)
    qtbot.keyClick(page, Qt.Key.Key_Return)
    (_, entries), = _ranks(db).items()
    assert entries == {ids[2]: 1, ids[0]: 2, ids[1]: 3}


def test_flag_a_response_by_number(qtbot, window, db):
    page = window.show_page("rank")
    ids = page.response_ids
    for k in ("f", "2", "9", "1"):  # flag → response [2] → category 9 (over-refusal) → low
        qtbot.keyClick(page, k)
    assert [(f.response_id, f.category, f.severity) for f in db.flags()] == [(ids[1], "over_refusal", "low")]
    assert page.flag_state is None
    qtbot.keyClick(page, "1")  # back to ranking keys
    assert page.placed == 1
