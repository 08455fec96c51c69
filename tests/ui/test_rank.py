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
    qtbot.keyClick(page, "u")  # the last action first: the skip
    assert page.prompt_id == first and len(_ranks(db)) == 1
    qtbot.keyClick(page, "u")  # then the ranking
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


def _red_team_rank_prompt(db) -> int:
    pid, _ = db.add_prompt([{"role": "user", "content": "How do I hurt someone?"}], tags=["red-team"])
    for text in ("No.", "Here is how: ...", "I can't help with that."):
        db.add_response(pid, text)
    return pid


def test_folded_responses_are_not_ranked_until_revealed(qtbot, window, db):
    pid = _red_team_rank_prompt(db)
    page = window.show_page("rank")
    page.show_prompt(pid)
    assert all(p.folded for p in page.panes)
    qtbot.keyClick(page, "1")
    assert page.placed == 0 and "Reveal the hidden content first" in window.statusBar().currentMessage()
    qtbot.keyClick(page, Qt.Key.Key_Return)
    assert db.ranking_ids() == [] and window.session.harmful_seen == 0
    qtbot.keyClick(page, "r")
    assert not any(p.folded for p in page.panes) and window.session.harmful_seen == 1
    for k in ("3", "1", "2"):
        qtbot.keyClick(page, k)
    qtbot.keyClick(page, Qt.Key.Key_Return)
    assert len(db.ranking_ids()) == 1


def test_rank_buttons_do_what_their_keys_do(qtbot, window, db):
    page = window.show_page("rank")
    pid, ids = page.prompt_id, page.response_ids
    place = [b for b in page.findChildren(type(page.buttons["submit"])) if b.long_text.startswith("Place next")]
    assert len(place) == len(ids)
    next(b for b in place if b.long_text.endswith(" 2")).click()
    page.buttons["tie_next"].click()
    next(b for b in place if b.long_text.endswith(" 3")).click()
    page.buttons["submit"].click()
    (rk,) = db.ranking_ids()
    assert db.get_ranking(rk) == {ids[1]: 1, ids[2]: 1, ids[0]: 2}
    page.buttons["undo"].click()
    assert db.ranking_ids() == [] and page.prompt_id == pid
    page.buttons["check_safe"].click()
    assert {f.response_id for f in db.flags() if not f.present} == set(ids)
    page.buttons["undo"].click()
    assert db.flags() == []
