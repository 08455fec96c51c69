"""Safe rendering of untrusted text (prompts, responses, guidelines): plain text or Markdown, never HTML.

- Markdown goes through Qt's CommonMark reader with raw HTML switched off, so ``<script>``, ``<img>`` and any
  other tag shows up as literal text and is never interpreted.
- No resource is ever loaded: ``loadResource`` answers nothing for every URL (no remote images, no local files).
- Links are not followed: clicking one does nothing (no ``javascript:``, no browser launched).
- A long text shows its first part only (default 20,000 characters) with a "show more" button, because laying out
  1 MB of text takes about half a second here and would freeze the window.
- Markdown keeps what the writer meant where CommonMark would not (:func:`markdown_source`): ``2*3*4`` stays a
  product, and a single line break stays a line break (a poem, an address). Each pane can switch to plain text.
- A pane can be folded (its text not even in the document) until revealed; :mod:`ui.folding` decides when.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTextBrowser, QToolButton, QVBoxLayout, QWidget

FIRST_CHARS = 20_000

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:.*?[^`])?\1(?!`)")
# A single "*" between two letters or digits (2*3, x*y): a multiplication sign, not the start of emphasis.
_TIMES = re.compile(r"(?<=[0-9A-Za-z)\]])\*(?=[0-9A-Za-z(\[])")
# A line whose next line continues the same paragraph gets a hard break, unless it already ends in one.
_HARD_BREAK = re.compile(r"( {2,}|\\)$")


def _escape_times(line: str) -> str:
    """Escape multiplication signs outside inline code spans (inside one a backslash would show)."""
    out, last = [], 0
    for m in _CODE_SPAN.finditer(line):
        out.append(_TIMES.sub(r"\\*", line[last:m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_TIMES.sub(r"\\*", line[last:]))
    return "".join(out)


def markdown_source(text: str, *, line_breaks: bool = True) -> str:
    """The text as given to Qt's Markdown reader: outside code blocks, a ``*`` between two letters or digits is kept
    as a multiplication sign, and (with ``line_breaks``) a line break inside a paragraph stays a line break, as chat
    interfaces show model output (CommonMark would join a poem's lines into one). Documents written with wrapped
    lines (the guidelines) are read without ``line_breaks``."""
    lines = text.split("\n")
    out: list[str] = []
    fence: str | None = None
    indented = False  # inside an indented code block: left as it is
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        previous = out[-1] if out else ""
        indented = fence is None and line.startswith(("    ", "\t")) and (indented or not previous.strip())
        if indented:
            out.append(line)
            continue
        if fence is not None:
            out.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                fence = None
            continue
        if m:
            fence = m.group(1)
            out.append(line)
            continue
        line = _escape_times(line)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if (line_breaks and line.strip() and following.strip() and not _FENCE.match(following)
                and not _HARD_BREAK.search(line)):
            line += "  "
        out.append(line)
    return "\n".join(out)


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

    def set_content(self, text: str, markdown: bool, *, line_breaks: bool = True) -> None:
        """Show ``text`` as Markdown (see :func:`markdown_source` for ``line_breaks``) or as plain text."""
        if markdown:
            self.document().setMarkdown(
                markdown_source(text, line_breaks=line_breaks),
                QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML,
            )
        else:
            self.setPlainText(text)


class TextPane(QWidget):
    """A SafeBrowser with truncation of long texts and a "show more" button, a switch to plain text
    (``plain_button``, below the text unless the page puts it in its own heading), and optionally folded (hidden)
    until revealed, for flagged or red-team content.

    ``reveal_requested`` fires when the mouse asks to reveal (the fold's button): the page reveals through the same
    handler as its key, so the exposure is counted either way."""

    revealed = Signal()
    reveal_requested = Signal()

    def __init__(self, parent: QWidget | None = None, *, first_chars: int = FIRST_CHARS, plain_key: str = "",
                 plain_toggle: bool = True):
        super().__init__(parent)
        self.first_chars = first_chars
        self.browser = SafeBrowser(self)
        self.fold_box = QWidget(self)
        self.fold_box.setObjectName("fold")
        self.fold_box.setStyleSheet("#fold { background: #3b3b3b; border-radius: 6px; } #fold QLabel { color: #f0f0f0; }")
        self.fold_label = QLabel(self.fold_box)
        self.fold_label.setWordWrap(True)
        self.reveal_button = QPushButton("Reveal (R)", self.fold_box)
        self.reveal_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.reveal_button.clicked.connect(self.reveal_requested)
        fold_lay = QVBoxLayout(self.fold_box)
        fold_lay.setContentsMargins(24, 24, 24, 24)
        fold_lay.addWidget(self.fold_label)
        fold_lay.addWidget(self.reveal_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.more = QPushButton("Show more", self)
        self.more.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.more.clicked.connect(self.show_all)
        self.plain_button = QToolButton(self)
        self.plain_button.setText("Plain text")
        self.plain_button.setCheckable(True)
        self.plain_button.setAutoRaise(True)
        self.plain_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.plain_button.setToolTip("Show this text as plain text, not Markdown" + (f" ({plain_key})" if plain_key else ""))
        self.plain_button.clicked.connect(self.toggle_plain)
        self.plain_toggle = plain_toggle  # a page may move the button into its own heading row
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.more)
        bottom.addStretch(1)
        bottom.addWidget(self.plain_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.fold_box)
        lay.addWidget(self.browser, 1)
        lay.addLayout(bottom)
        self.fold_box.hide()
        self.more.hide()
        self._text = ""
        self._markdown = True      # what the page asked for
        self.plain = False         # switched to plain text for this text only
        self.folded = False
        self.truncated = False

    @property
    def markdown(self) -> bool:
        """Whether the text is rendered as Markdown now."""
        return self._markdown and not self.plain

    def set_text(self, text: str, *, markdown: bool = True, fold_reason: str | None = None) -> None:
        """Show a new text (plain text switched off again); folded, with the reason, when ``fold_reason`` is given."""
        self._text, self._markdown = text, markdown
        self.plain = False
        self.plain_button.setChecked(False)
        self.folded = bool(fold_reason)
        self.plain_button.setVisible(markdown and self.plain_toggle and not self.folded)
        if self.folded:
            # The text is not put into the document at all while folded: nothing harmful is on screen.
            self.fold_label.setText(f"Hidden: {fold_reason}.")
            self.fold_box.show()
            self.browser.hide()
            self.browser.clear()
            self.more.hide()
            return
        self.fold_box.hide()
        self.browser.show()
        self._render(limit=True)

    def _render(self, limit: bool) -> None:
        text = self._text
        self.truncated = limit and len(text) > self.first_chars
        if self.truncated:
            text = text[: self.first_chars]
            self.more.setText(f"Show more ({len(self._text) - self.first_chars:,} more characters)")
        self.more.setVisible(self.truncated)
        self.browser.set_content(text, self.markdown)

    def reveal(self) -> None:
        if self.folded:
            self.folded = False
            self.fold_box.hide()
            self.browser.show()
            self.plain_button.setVisible(self._markdown and self.plain_toggle)
            self._render(limit=True)
            self.revealed.emit()

    def toggle_plain(self) -> None:
        """Switch this text between Markdown and plain text (what the page asked for comes back with the next text)."""
        self.plain = not self.plain
        self.plain_button.setChecked(self.plain)
        if not self.folded:
            scroll = self.browser.verticalScrollBar().value()
            self._render(limit=self.truncated)
            self.browser.verticalScrollBar().setValue(scroll)

    def show_all(self) -> None:
        if self.truncated:
            self._render(limit=False)

    def shown_text(self) -> str:
        return "" if self.folded else self.browser.toPlainText()

    def scroll_pages(self, pages: int) -> None:
        bar = self.browser.verticalScrollBar()
        bar.setValue(bar.value() + pages * bar.pageStep())

    def scroll_to_last(self, marker: str) -> None:
        """Scroll so the last occurrence of ``marker`` (a turn's heading) is at the top; the end when it is absent."""
        doc = self.browser.document()
        doc.setTextWidth(self.browser.viewport().width())
        cursor = doc.find(marker, doc.characterCount(), QTextDocument.FindFlag.FindBackward)
        bar = self.browser.verticalScrollBar()
        if cursor.isNull():
            bar.setValue(bar.maximum())
            return
        top = doc.documentLayout().blockBoundingRect(cursor.block()).top()
        bar.setValue(int(top))
