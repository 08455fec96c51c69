"""Write: an editor for demonstrations on prompts that lack a good answer, with a live Markdown preview.

Prompts come from ``workbench.queue.WriteQueue`` (no demonstration, no winning or ranked response; prompts judged
"both bad" first). Ctrl+Enter stores the text as an expert response plus a demonstration. The editor keeps every
plain key (G types a g); the page's keys carry Ctrl or Alt. A flagged prompt is folded (:mod:`ui.folding`) and
nothing is written for it until it is revealed. Ctrl+E never loses a draft: over one it asks first (Ctrl+E again
replaces), and the replacement is one step of the editor's undo (Ctrl+Z brings the draft back).
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSizePolicy, QSplitter, QVBoxLayout, QWidget

from workbench.queue import WriteQueue
from workbench.store import Response

from ..folding import REVEAL_FIRST, FoldedItem, ReadingKeys
from ..render import SafeBrowser, TextPane
from ..widgets import conversation_markdown, turn_heading
from .base import Page

CONFIRM_SECONDS = 5.0


class WritePage(ReadingKeys, Page):
    name = "write"
    title = "Write"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.prompt_id: int | None = None
        self.edited_from: int | None = None
        self.skipped: set[int] = set()
        self.queue: WriteQueue | None = None
        self.fold = FoldedItem(session)
        self._replace_armed: tuple[int, float] | None = None  # (response id, when) after a first Ctrl+E over a draft
        self.prompt_pane = TextPane(plain_toggle=False)
        self.prompt_pane.browser.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.prompt_pane.reveal_requested.connect(lambda: self.router.trigger("reveal"))
        self.existing = QLabel()
        self.existing.setStyleSheet("color: gray;")
        self.editor = QPlainTextEdit()
        self.editor.setPlaceholderText("Write the answer you want the model to give (Markdown). Ctrl+Enter saves.")
        self.preview = SafeBrowser()
        self.preview.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.update_preview)
        self.editor.textChanged.connect(self._debounce.start)
        self.editor.textChanged.connect(self._disarm)  # a changed draft is asked about afresh
        halves = QSplitter(Qt.Orientation.Horizontal)
        for title, w in (("Your answer", self.editor), ("Preview", self.preview)):
            box = QWidget()
            v = QVBoxLayout(box)
            v.setContentsMargins(0, 0, 0, 0)
            v.addWidget(QLabel(f"<b>{title}</b>"))
            v.addWidget(w, 1)
            halves.addWidget(box)
        rows = QSplitter(Qt.Orientation.Vertical)
        rows.addWidget(self.prompt_pane)
        rows.addWidget(halves)
        rows.setChildrenCollapsible(False)
        rows.setStretchFactor(1, 3)
        rows.setSizes([170, 600])
        self.body = rows
        self.empty_label = QLabel("Every prompt has a good answer: nothing to write.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.hide()
        self.feedback = QLabel()
        self.hint = QLabel("Ctrl+Enter save · Ctrl+Right skip · Ctrl+E start from an existing response · Ctrl+Z undo · "
                           "Ctrl+R reveal · Alt+PgUp/PgDown prompt · Ctrl+G guidelines · F1 all keys")
        self.hint.setStyleSheet("color: gray;")
        self.hint.setWordWrap(True)
        for label in (self.existing, self.feedback, self.hint):
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay = QVBoxLayout(self)
        lay.addWidget(rows, 1)
        lay.addWidget(self.empty_label, 1)
        lay.addWidget(self.existing)
        lay.addWidget(self.feedback)
        lay.addWidget(self.hint)
        self._loaded = False

    def activate(self) -> None:
        if not self._loaded:
            self._loaded = True
            self.queue = WriteQueue(self.project)
            self.show_next()
        self.editor.setFocus()

    def show_next(self) -> None:
        after = self.prompt_id or 0
        pid = self.queue.next(after, exclude=self.skipped)
        if pid is None and (after or self.skipped):
            pid = self.queue.next(0, exclude=self.skipped) or self.queue.next(0)
            self.skipped.clear()
        self.show_prompt(pid)

    def show_prompt(self, pid: int | None) -> None:
        self.prompt_id = pid
        self.edited_from = None
        self._replace_armed = None
        self.editor.clear()
        self.preview.clear()
        self.fold.start(("prompt", pid))
        if pid is None:
            self.body.hide()
            self.empty_label.show()
            self.existing.setText("")
            return
        self.body.show()
        self.empty_label.hide()
        prompt = self.project.get_prompt(pid)
        self.prompt = prompt
        self.fold.show(self.prompt_pane, conversation_markdown(prompt.messages), flags=self.project.flags_for_prompt(pid))
        if len(prompt.messages) > 1:  # a multi-turn prompt opens at its last turn
            self.prompt_pane.scroll_to_last(turn_heading(prompt.messages[-1]))
        n = len(self.project.responses_for(pid))
        self.existing.setText(f"Prompt #{pid} · {n} existing response(s), none judged good yet")
        self.shown_at = time.monotonic()

    def update_preview(self) -> None:
        self.preview.set_content(self.editor.toPlainText(), markdown=True)

    def act_save(self, _k: str) -> None:
        text = self.editor.toPlainText()
        if self.prompt_id is None or not text.strip():
            self.feedback.setText("Write something first.")
            return
        if self.fold.folded:
            self.refuse(REVEAL_FIRST + ": read the prompt before answering it (Ctrl+R).")
            return
        spent = int((time.monotonic() - self.shown_at) * 1000)
        demo_id, _, created = self.project.add_demonstration(self.prompt_id, text, edited_from=self.edited_from, time_spent_ms=spent)
        if created:
            self.session.notify(demonstrations=1, action=1)
        self.feedback.setText(f"Saved demonstration {demo_id}.")
        self.show_next()
        self.editor.setFocus()

    def act_skip(self, _k: str) -> None:
        if self.prompt_id is not None:
            self.skipped.add(self.prompt_id)
        self.show_next()

    def _starting_point(self) -> Response | None:
        """The response Ctrl+E starts from: the first one without a flag, else the first one."""
        responses = self.project.responses_for(self.prompt_id)
        clean = [r for r in responses if not self.project.flags_for_response(r.id)]
        return (clean or responses or [None])[0]

    def act_edit_response(self, _k: str) -> None:
        if self.prompt_id is None:
            return
        if self.fold.folded:
            self.refuse(REVEAL_FIRST + ": read the prompt before starting an answer (Ctrl+R).")
            return
        response = self._starting_point()
        if response is None:
            self.feedback.setText("This prompt has no response to start from.")
            return
        draft = self.editor.toPlainText()
        armed = self._replace_armed
        fresh = armed is not None and armed[0] == response.id and time.monotonic() - armed[1] < CONFIRM_SECONDS
        if draft.strip() and draft != response.content and not fresh:
            self._replace_armed = (response.id, time.monotonic())
            self.feedback.setText(f"Replace your draft with response #{response.id}? Press Ctrl+E again to replace it "
                                  "(Ctrl+Z then brings your draft back); keep typing to keep it.")
            return
        self._replace_armed = None
        # One edit of the document, not setPlainText (which forgets the undo history): Ctrl+Z restores the draft.
        cursor = self.editor.textCursor()
        cursor.beginEditBlock()
        cursor.select(QTextCursor.SelectionType.Document)
        cursor.insertText(response.content)
        cursor.endEditBlock()
        self.editor.setTextCursor(cursor)
        self.edited_from = response.id
        if self.session.harm_reason(self.prompt.tags, self.project.flags_for_response(response.id)):
            self.fold.seen()  # harmful text is now in the editor, on screen
        self.feedback.setText(f"Started from response #{response.id}." + (" Ctrl+Z brings your draft back." if draft.strip() else ""))

    def _disarm(self) -> None:
        self._replace_armed = None

    def act_undo_text(self, _k: str) -> None:
        self.editor.undo()
