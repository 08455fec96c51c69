"""Safe rendering of untrusted text (prompts, responses, guidelines): plain text or Markdown, never HTML.

- Markdown goes through Qt's CommonMark reader with raw HTML switched off, so ``<script>``, ``<img>`` and any
  other tag shows up as literal text and is never interpreted.
- No resource is ever loaded: ``loadResource`` answers nothing for every URL (no remote images, no local files).
- Links are not followed: clicking one does nothing (no ``javascript:``, no browser launched).
- A long text shows its first part only (default 20,000 characters) with a "show more" button, because laying out
  1 MB of text takes about half a second here and would freeze the window.
"""

from __future__ import annotations

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QLabel, QPushButton, QTextBrowser, QVBoxLayout, QWidget

FIRST_CHARS = 20_000


class SafeBrowser(QTextBrowser):
    """A read-only text view that cannot run code, fetch resources or follow links."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setOpenLinks(False)
        self.setReadOnly(True)
        self.loaded_urls: list[str] = []  # every URL the document asked for (all refused); tests read it

    def loadResource(self, kind: int, url: QUrl):  # noqa: N802 (Qt's name)
        self.loaded_urls.append(url.toString())
        return None

    def set_content(self, text: str, markdown: bool) -> None:
        if markdown:
            self.document().setMarkdown(text, QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML)
        else:
            self.setPlainText(text)


class TextPane(QWidget):
    """A SafeBrowser with truncation of long texts and a "show more" button; optionally folded (hidden) until
    revealed, for flagged or red-team content."""

    revealed = Signal()

    def __init__(self, parent: QWidget | None = None, *, first_chars: int = FIRST_CHARS):
        super().__init__(parent)
        self.first_chars = first_chars
        self.browser = SafeBrowser(self)
        self.fold_label = QLabel(self)
        self.fold_label.setWordWrap(True)
        self.fold_label.setObjectName("fold")
        self.fold_label.setStyleSheet("#fold { background: #3b3b3b; color: #f0f0f0; padding: 24px; border-radius: 6px; }")
        self.more = QPushButton("Show more", self)
        self.more.setFocusPolicy(self.more.focusPolicy().NoFocus)
        self.more.clicked.connect(self.show_all)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.fold_label)
        lay.addWidget(self.browser, 1)
        lay.addWidget(self.more)
        self.fold_label.hide()
        self.more.hide()
        self._text = ""
        self._markdown = True
        self.folded = False
        self.truncated = False

    def set_text(self, text: str, *, markdown: bool = True, fold_reason: str | None = None) -> None:
        self._text, self._markdown = text, markdown
        self.folded = bool(fold_reason)
        if self.folded:
            # The text is not put into the document at all while folded: nothing harmful is on screen.
            self.fold_label.setText(f"Hidden: {fold_reason}.\nPress R to reveal.")
            self.fold_label.show()
            self.browser.hide()
            self.browser.clear()
            self.more.hide()
            return
        self.fold_label.hide()
        self.browser.show()
        self._render(limit=True)

    def _render(self, limit: bool) -> None:
        text = self._text
        self.truncated = limit and len(text) > self.first_chars
        if self.truncated:
            text = text[: self.first_chars]
            self.more.setText(f"Show more ({len(self._text) - self.first_chars:,} more characters)")
        self.more.setVisible(self.truncated)
        self.browser.set_content(text, self._markdown)

    def reveal(self) -> None:
        if self.folded:
            self.folded = False
            self.fold_label.hide()
            self.browser.show()
            self._render(limit=True)
            self.revealed.emit()

    def show_all(self) -> None:
        if self.truncated:
            self._render(limit=False)

    def shown_text(self) -> str:
        return "" if self.folded else self.browser.toPlainText()
