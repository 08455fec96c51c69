"""The first screen when no project is open: open, create, or pick a recent project."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QPushButton, QVBoxLayout, QWidget


class Welcome(QWidget):
    open_requested = Signal()
    new_requested = Signal()
    recent_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        title = QLabel("<h2>RLHF Workbench</h2>")
        self.message = QLabel("Open a project (Ctrl+O) or create one (Ctrl+N).")
        self.message.setWordWrap(True)
        open_btn = QPushButton("Open project…")
        new_btn = QPushButton("Create project…")
        open_btn.clicked.connect(self.open_requested)
        new_btn.clicked.connect(self.new_requested)
        self.recent = QListWidget()
        self.recent.itemActivated.connect(lambda item: self.recent_chosen.emit(item.text()))
        buttons = QHBoxLayout()
        buttons.addWidget(open_btn)
        buttons.addWidget(new_btn)
        buttons.addStretch(1)
        box = QWidget()
        box.setMinimumWidth(560)
        box.setMaximumWidth(720)
        v = QVBoxLayout(box)
        v.addWidget(title)
        v.addWidget(self.message)
        v.addLayout(buttons)
        v.addWidget(QLabel("Recent projects (Enter or double-click opens):"))
        v.addWidget(self.recent, 1)
        outer = QHBoxLayout(self)
        outer.addWidget(box, 0, Qt.AlignmentFlag.AlignHCenter)

    def set_recent(self, paths: list[str]) -> None:
        self.recent.clear()
        self.recent.addItems(paths)
        if paths:
            self.recent.setCurrentRow(0)
