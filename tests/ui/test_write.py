"""The Write page: typing into the editor, saving with Ctrl+Enter; the demonstration is in the database."""

from __future__ import annotations

from PySide6.QtCore import Qt

from ui.pages.write import WritePage


def test_type_and_save_a_demonstration(qtbot, window, db):
    page = window.show_page("write")
    assert isinstance(page, WritePage)
    pid = page.prompt_id
    qtbot.keyClicks(page.editor, "# Title")
    qtbot.keyClick(page.editor, Qt.Key.Key_Return)  # a plain Return types a newline: the editor keeps it
    qtbot.keyClick(page.editor, Qt.Key.Key_Return)
    qtbot.keyClicks(page.editor, "Use **bold** <b>html</b>")
    assert db.demonstrations() == []
    page.update_preview()
    assert "bold" in page.preview.toPlainText() and "<b>html</b>" in page.preview.toPlainText()  # raw HTML shown as text
    qtbot.keyClick(page.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    rows = [(d.prompt_id, db.get_response(d.response_id).content, db.get_response(d.response_id).origin)
            for d in db.demonstrations()]
    assert rows == [(pid, "# Title\n\nUse **bold** <b>html</b>", "expert")]
    assert page.prompt_id != pid and page.editor.toPlainText() == ""
    assert "1 demonstrations" in window.counts_label.text()


def test_skip_and_start_from_a_response(qtbot, window, db):
    page = window.show_page("write")
    first = page.prompt_id
    qtbot.keyClick(page.editor, Qt.Key.Key_Right, Qt.KeyboardModifier.ControlModifier)
    assert page.prompt_id != first
    qtbot.keyClick(page.editor, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert page.editor.toPlainText().startswith("Response A")
    qtbot.keyClicks(page.editor, " Edited.")
    qtbot.keyClick(page.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    (demo,) = db.demonstrations()
    assert demo.edited_from is not None


def test_prompts_with_a_winner_are_not_offered(qtbot, window, db):
    c = db.next_pending()
    db.judge(c.id, "a")
    page = window.show_page("write")
    assert page.prompt_id != c.prompt_id


def test_ctrl_e_asks_before_replacing_a_draft_and_ctrl_z_brings_it_back(qtbot, window, db):
    page = window.show_page("write")
    qtbot.keyClicks(page.editor, "My own careful draft.")
    qtbot.keyClick(page.editor, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert page.editor.toPlainText() == "My own careful draft."  # asked, not replaced
    assert "Ctrl+E again" in page.feedback.text()
    qtbot.keyClick(page.editor, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert page.editor.toPlainText().startswith("Response A")
    qtbot.keyClick(page.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert page.editor.toPlainText() == "My own careful draft."
    # An empty editor is replaced at once, nothing to lose.
    page.editor.clear()
    qtbot.keyClick(page.editor, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert page.editor.toPlainText().startswith("Response A")


def test_the_guidelines_key_on_write_opens_them_and_types_nothing(qtbot, window):
    page = window.show_page("write")
    window.dock.hide()  # the guidelines a new project shows on its first open, closed
    qtbot.keyClicks(page.editor, "draft")
    assert not window.dock.isVisible()
    assert "Ctrl+G guidelines" in page.hint.text()
    qtbot.keyClick(page.editor, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier)  # what the hint says
    assert window.dock.isVisible() and page.editor.toPlainText() == "draft"
    qtbot.keyClick(page.editor, "g")  # a plain g is a letter of the answer
    assert page.editor.toPlainText() == "draftg"


def test_a_flagged_prompt_is_folded_on_write_and_revealing_counts(qtbot, window, db):
    page = window.show_page("write")
    pid = page.prompt_id
    db.add_flag(pid, "hate_harassment", "high", note="hateful request")
    page.show_prompt(pid)
    assert page.prompt_pane.folded and page.prompt_pane.shown_text() == ""
    qtbot.keyClicks(page.editor, "An answer.")
    qtbot.keyClick(page.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert db.demonstrations() == [] and "Reveal the hidden content first" in page.feedback.text()
    assert window.session.harmful_seen == 0
    qtbot.keyClick(page.editor, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert not page.prompt_pane.folded and window.session.harmful_seen == 1
    assert page.editor.toPlainText() == "An answer."
    qtbot.keyClick(page.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert [d.prompt_id for d in db.demonstrations()] == [pid]
