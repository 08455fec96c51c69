"""Overview: the project's counts at a glance (what ``workbench gui PROJECT`` shows first)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from .base import Page

ROWS = (
    ("prompts", "Prompts"),
    ("heldout_prompts", "  held out"),
    ("responses", "Responses"),
    ("comparisons", "Comparisons"),
    ("judged", "  judged"),
    ("pending", "  pending (the queue)"),
    ("retests", "  retests"),
    ("retracted", "  retracted"),
    ("rankings", "Rankings"),
    ("demonstrations", "Demonstrations"),
    ("flags", "Safety flags"),
    ("snapshots", "Snapshots"),
    ("runs", "Training runs"),
    ("guideline_version", "Guideline version"),
)


class OverviewPage(Page):
    name = "overview"
    title = "Overview"

    def __init__(self, session, parent: QWidget | None = None):
        super().__init__(session, parent)
        self.heading = QLabel()
        self.heading.setStyleSheet("font-size: 18px; font-weight: bold;")
        self.heading.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box = QGroupBox("Counts")
        box.setMaximumWidth(460)
        form = QFormLayout(box)
        self.values: dict[str, QLabel] = {}
        for key, label in ROWS:
            v = QLabel("–")
            v.setObjectName(f"count_{key}")
            v.setAlignment(Qt.AlignmentFlag.AlignRight)
            self.values[key] = v
            form.addRow(label, v)
        self.verdicts = QLabel()
        self.verdicts.setWordWrap(True)
        hint = QLabel(
            "Ctrl+2 Compare · Ctrl+3 Rank · Ctrl+4 Write · Ctrl+5 History · Ctrl+6 Dashboard · G guidelines · F1 every shortcut"
        )
        hint.setStyleSheet("color: gray;")
        lay = QVBoxLayout(self)
        lay.addWidget(self.heading)
        lay.addWidget(box)
        lay.addWidget(self.verdicts)
        lay.addStretch(1)
        lay.addWidget(hint)

    def activate(self) -> None:
        super().activate()
        stats = self.project.stats()
        self.heading.setText(str(self.project.path))
        for key, _ in ROWS:
            self.values[key].setText(f"{stats.get(key, 0):,}")
        v = stats["verdicts"]
        flags = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in stats["flag_categories"].items()) or "none"
        self.verdicts.setText(
            f"Verdicts: A {v['a']:,} · B {v['b']:,} · tie {v['tie']:,} · both bad {v['both_bad']:,}\n"
            f"Flags by category: {flags}"
        )
        self.stats = stats
