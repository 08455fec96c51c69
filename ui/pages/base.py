"""The base of every page: a widget with a name, a shortcut scope and handlers named as in ``ui.shortcuts``."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..session import Session
from ..shortcuts import KeyRouter


class Page(QWidget):
    name = "page"        # also the shortcut scope
    title = "Page"

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        # A page never holds the window wider or taller than its screen: the window's stack would otherwise take the
        # largest minimum of every page built so far, and the guidelines panel would push the page off-screen.
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.router = KeyRouter(self, self.scopes, self.handler)

    @property
    def project(self):
        return self.session.project

    def scopes(self) -> list[str]:
        return [self.name]

    def handler(self, action: str) -> Callable[[str], None] | None:
        fn = getattr(self, "act_" + action, None)
        return fn

    def prefs_changed(self) -> None:
        """Preferences changed (e.g. folding of flagged content switched): redraw what is shown."""

    def activate(self) -> None:
        """Called when the page becomes visible: load or refresh what it shows."""
        self.setFocus()

    def refuse(self, message: str) -> None:
        """Say why a key did nothing: on the page's feedback line (when it has one) and in the status bar."""
        feedback = getattr(self, "feedback", None)
        if feedback is not None:
            feedback.setText(message)
        bar = getattr(self.window(), "statusBar", None)
        if callable(bar):
            bar().showMessage(message, 8000)
