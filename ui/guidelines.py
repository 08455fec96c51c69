"""The guidelines side panel: the project's Markdown guideline, versioned; edit and save a new version.

Every judgment records the guideline version it was made under (the store stamps the current one).
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from .render import SafeBrowser
from .session import Session


class GuidelinesPanel(QWidget):
    saved = Signal(int)

    def __init__(self, session: Session, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.version_box = QComboBox()
        self.version_box.currentIndexChanged.connect(self._show_version)
        self.view = SafeBrowser()
        self.editor = QPlainTextEdit()
        self.editor.hide()
        self.edit_btn = QPushButton("Edit")
        self.edit_btn.clicked.connect(self.start_edit)
        self.save_btn = QPushButton("Save as new version")
        self.save_btn.clicked.connect(self.save)
        self.save_btn.hide()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel_edit)
        self.cancel_btn.hide()
        top = QHBoxLayout()
        top.addWidget(QLabel("Version"))
        top.addWidget(self.version_box, 1)
        buttons = QHBoxLayout()
        for b in (self.edit_btn, self.save_btn, self.cancel_btn):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.editor, 1)
        lay.addLayout(buttons)
        self.reload()

    def reload(self) -> None:
        self._versions = self.session.project.guideline_versions()
        self.version_box.blockSignals(True)
        self.version_box.clear()
        for v, created, _ in reversed(self._versions):
            self.version_box.addItem(f"v{v} · {created[:16].replace('T', ' ')}", v)
        self.version_box.blockSignals(False)
        self.version_box.setCurrentIndex(0)
        self._show_version()

    def _show_version(self) -> None:
        v = self.version_box.currentData()
        text = next((t for ver, _, t in self._versions if ver == v), "")
        self.view.set_content(text, markdown=True, line_breaks=False)  # a document with wrapped lines

    def start_edit(self) -> None:
        self.editor.setPlainText(self.session.project.guideline()[1])
        self.view.hide()
        self.editor.show()
        self.editor.setFocus()
        self.edit_btn.hide()
        self.save_btn.show()
        self.cancel_btn.show()

    def cancel_edit(self) -> None:
        self.editor.hide()
        self.view.show()
        self.edit_btn.show()
        self.save_btn.hide()
        self.cancel_btn.hide()

    def save(self) -> int:
        version = self.session.project.set_guideline(self.editor.toPlainText())
        self.cancel_edit()
        self.reload()
        self.saved.emit(version)
        return version
