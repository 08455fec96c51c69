"""The on-screen help: every shortcut of ``ui.shortcuts.SHORTCUTS``, grouped by where it works."""

from __future__ import annotations

from html import escape

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from .shortcuts import SCOPE_TITLES, SHORTCUTS


def help_html() -> str:
    parts = ["<h2>Keyboard shortcuts</h2>"]
    for scope, title in SCOPE_TITLES.items():
        rows = [b for b in SHORTCUTS if b.scope == scope]
        if not rows:
            continue
        parts.append(f"<h3>{escape(title)}</h3><table cellspacing=0 cellpadding=3>")
        for b in rows:
            keys = " / ".join(f"<b>{escape(k)}</b>" for k in b.keys)
            parts.append(f"<tr><td width=190>{keys}</td><td>{escape(b.help)}</td></tr>")
        parts.append("</table>")
    return "".join(parts)


class HelpDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(620, 720)
        self.view = QTextBrowser(self)
        self.view.setOpenLinks(False)
        self.view.setHtml(help_html())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.view)
        lay.addWidget(buttons)
