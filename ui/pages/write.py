"""Write: an editor for demonstrations on prompts that lack a good answer, with a live Markdown preview.

Prompts come from ``workbench.queue.next_write_prompt`` (no demonstration, no winning or ranked response;
prompts judged "both bad" first). Ctrl+Enter stores the text as an expert response plus a demonstration.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from workbench.queue import WriteQueue

from ..render import SafeBrowser, TextPane
from ..widgets import conversation_markdown
from .base import Page


class WritePage(Page):
    name = "write"
    title = "Write"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.prompt_id: int | None = None
        self.edited_from: int | None = None
        self.skipped: set[int] = set()
        self.queue: WriteQueue | None = None
        self.prompt_pane = TextPane()
        self.prompt_pane.browser.setFocusPolicy(Qt.FocusPolicy.NoFocus)
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
        rows.setStretchFactor(1, 3)
        rows.setSizes([150, 600])
        self.body = rows
        self.empty_label = QLabel("Every prompt has a good answer: nothing to write.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.hide()
        self.feedback = QLabel()
        hint = QLabel("Ctrl+Enter save · Ctrl+Right skip · Ctrl+E start from the best existing response · G guidelines")
        hint.setStyleSheet("color: gray;")
        lay = QVBoxLayout(self)
        lay.addWidget(rows, 1)
        lay.addWidget(self.empty_label, 1)
        lay.addWidget(self.existing)
        lay.addWidget(self.feedback)
        lay.addWidget(hint)
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
        self.editor.clear()
        self.preview.clear()
        if pid is None:
            self.body.hide()
            self.empty_label.show()
            self.existing.setText("")
            return
        self.body.show()
        self.empty_label.hide()
        prompt = self.project.get_prompt(pid)
        self.prompt_pane.set_text(conversation_markdown(prompt.messages))
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

    def act_edit_response(self, _k: str) -> None:
        if self.prompt_id is None:
            return
        responses = self.project.responses_for(self.prompt_id)
        if responses:
            self.edited_from = responses[0].id
            self.editor.setPlainText(responses[0].content)

    def act_undo_text(self, _k: str) -> None:
        self.editor.undo()
