"""Small shared pieces of the pages: the conversation renderer, a lazily filled filter combo, buttons that do what
a key does, the session's progress toward its target, and the guard that keeps the mouse wheel from changing a
drop-down or spin box it merely passes over."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from .session import Session
from .shortcuts import SHORTCUTS


def conversation_markdown(messages: list[dict[str, str]]) -> str:
    """A prompt (list of role/content messages) as Markdown: each turn under its role in bold."""
    parts = []
    for m in messages:
        parts.append(f"**{turn_heading(m)}**\n\n{m.get('content', '')}")
    return "\n\n---\n\n".join(parts)


def turn_heading(message: dict[str, str]) -> str:
    """The heading a turn gets in :func:`conversation_markdown` (``User:``, ``Assistant:``)."""
    return f"{message.get('role', '?').capitalize()}:"


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


class KeyButton(QPushButton):
    """A button labelled with its words and its key; where the words do not fit, the short label (the key alone, or
    a symbol and the key) is shown instead of clipped words. The full words stay in the tooltip."""

    def __init__(self, text: str, short: str):
        super().__init__(text)
        self.long_text, self.short_text = text, short
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)  # shrinks with the window
        self.setMinimumWidth(36)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        room = self.width() - 16
        self.setText(self.long_text if self.fontMetrics().horizontalAdvance(self.long_text) <= room else self.short_text)
        super().resizeEvent(event)


def key_button(page: QWidget, action: str, text: str, *, key: str | None = None, short: str = "",
               shown_key: str | None = None) -> KeyButton:
    """A button for a mouse user that runs ``action`` through the page's key router, exactly as its key does
    (``key``: the key name the handler gets, by default the action's first key). Its label shows the key (or
    ``shown_key``, another of the action's keys); ``short`` (before the key) is what a narrow button shows instead
    of ``text``."""
    binding = next(b for b in SHORTCUTS if b.scope in page.router.scopes() + [page.name] and b.action == action)
    shown = shown_key or key or binding.keys[0]
    button = KeyButton(f"{text}  {shown}", f"{short} {shown}".strip())
    button.setToolTip(f"{binding.help} (key: {' / '.join(binding.keys) if key is None else key})")
    button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # a click must not take the keys away from the page
    button.clicked.connect(lambda: page.router.trigger(action, key))
    return button


class _WheelGuard(QObject):
    """Sends a wheel turn over an unfocused drop-down or spin box on to the page (which scrolls), instead of letting
    it change the value: a form scrolled with the wheel must not change under the pointer."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.Wheel or not isinstance(obj, QWidget) or obj.hasFocus():
            return False
        area = obj.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is not None:
            QApplication.sendEvent(area.viewport(), event)  # the scroll area scrolls, as over any other part
            event.accept()
        else:
            event.ignore()  # ignored and filtered: Qt passes it on to the parent
        return True


_WHEEL_GUARD: _WheelGuard | None = None


def guard_wheel(widget: QComboBox | QAbstractSpinBox) -> None:
    """Let the wheel change ``widget`` only once it has the focus (a click or Tab gives it); over it otherwise,
    the wheel scrolls the page."""
    global _WHEEL_GUARD
    if _WHEEL_GUARD is None:
        _WHEEL_GUARD = _WheelGuard()
    widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # not WheelFocus: the wheel alone never focuses it
    widget.installEventFilter(_WHEEL_GUARD)


class SessionProgress(QProgressBar):
    """This session's actions toward the target in the preferences (``session/target``), shared by the pages that
    show it; the number is the status bar's "this session"."""

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.setTextVisible(True)
        self.setMinimumWidth(150)
        self.setMaximumWidth(260)
        self.setToolTip("Actions this session (judgments, rankings, answers, flags) toward the target set in "
                        "Project → Preferences")
        session.changed.connect(lambda _delta: self.update_value())
        self.update_value()

    def update_value(self) -> None:
        target = max(1, int(self.session.prefs.get("session/target")))
        done = self.session.actions
        self.setMaximum(target)
        self.setValue(min(done, target))
        self.setFormat(f"this session: {done} of {target}")
