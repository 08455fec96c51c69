"""Going from one page to another with something chosen: the Runs page's "Use as reward model" opens Train on PPO
with that run picked, the Overview's next step opens the page it names, the Rank page's empty state opens Generate.

A page finds the main window through Qt (``widget.window()``), so pages need no reference to it; outside a main
window (a page built alone, in a test) there is nowhere to go and :func:`go_to` returns None.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QWidget


def go_to(widget: QWidget, page: str, then: Callable[[Any], None] | None = None) -> QWidget | None:
    """Show ``page`` in ``widget``'s main window, then call ``then(page)`` (to pick what was chosen); returns the
    page, or None when ``widget`` is not in a main window."""
    window = widget.window()
    show = getattr(window, "show_page", None)
    if show is None:
        return None
    target = show(page)
    if then is not None:
        then(target)
    return target


class RankEmptyState(QWidget):
    """What the Rank page shows when nothing is left to rank: when no prompt has three or more responses at all
    (:func:`workbench.loop.rank_needs_generate`), a button that opens Generate set to three candidates per prompt."""

    def __init__(self, parent: QWidget | None = None):
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QLabel, QPushButton, QVBoxLayout

        super().__init__(parent)
        self.label = QLabel()
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setWordWrap(True)
        self.button = QPushButton("Generate three candidates per prompt…")
        self.button.setObjectName("rankGenerate")
        self.button.clicked.connect(self.open_generate)
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        lay.addWidget(self.label)
        lay.addWidget(self.button, 0, Qt.AlignmentFlag.AlignCenter)
        lay.addStretch(1)

    def refresh(self, project: Any) -> None:
        from workbench.loop import RANK_MIN_RESPONSES, rank_needs_generate

        needs = rank_needs_generate(project)
        self.label.setText(
            f"Nothing to rank: no prompt has {RANK_MIN_RESPONSES} or more responses yet. Generate more candidates per "
            "prompt first." if needs else
            "Nothing to rank: no prompt with three or more responses is left unranked.")
        self.button.setVisible(needs)

    def open_generate(self) -> QWidget | None:
        from workbench.loop import RANK_MIN_RESPONSES

        return go_to(self, "generate", lambda page: page.form.set_value("n_per_prompt", RANK_MIN_RESPONSES))
