"""Small shared pieces of the pages: the conversation renderer, side mapping, a lazily filled filter combo."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QComboBox


def conversation_markdown(messages: list[dict[str, str]]) -> str:
    """A prompt (list of role/content messages) as Markdown: each turn under its role in bold."""
    parts = []
    for m in messages:
        role = m.get("role", "?").capitalize()
        parts.append(f"**{role}:**\n\n{m.get('content', '')}")
    return "\n\n---\n\n".join(parts)


def other(side: str) -> str:
    return "b" if side == "a" else "a"


class LazyCombo(QComboBox):
    """A filter combo box whose choices are loaded the first time it opens (a DISTINCT over a million rows
    should not delay showing the page). Its first entry means "no filter" (data None)."""

    def __init__(self, any_label: str, load: Callable[[], list[str]]):
        super().__init__()
        self._load = load
        self._loaded = False
        self.addItem(any_label, None)

    def ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            for value in self._load():
                self.addItem(value, value)

    def showPopup(self) -> None:  # noqa: N802 (Qt's name)
        self.ensure_loaded()
        super().showPopup()

    def select(self, value: str) -> None:
        self.ensure_loaded()
        self.setCurrentIndex(self.findData(value))
