"""The open project as the pages share it: the Project, the preferences, the session clock and counters.

Pages write through ``session.project`` (each store call is one committed transaction) and then call
:meth:`Session.notify` with what changed: the session counts its actions, and the status bar reads the project's
trigger-kept counters again (constant time, and the same numbers Overview and Train show). Harmful content seen
is counted once per item (:meth:`Session.saw_harmful`, through :mod:`ui.folding`).
"""

from __future__ import annotations

import time
from collections.abc import Hashable

from PySide6.QtCore import QObject, Signal

from workbench.store import Project

from .prefs import Prefs

RED_TEAM_TAGS = frozenset({"red-team", "red_team", "redteam", "unsafe", "harmful"})


class Session(QObject):
    changed = Signal(dict)       # {"judged": +1, "pending": -1, "action": 1, ...}: what an action changed
    refresh = Signal()           # something changed that needs a full recount (e.g. guideline edited)
    harmful_seen_changed = Signal(int)

    def __init__(self, project: Project, prefs: Prefs, parent: QObject | None = None):
        super().__init__(parent)
        self.project = project
        self.prefs = prefs
        self.started = time.monotonic()
        self.started_iso = _now_iso()
        self.actions = 0          # judgments, rankings, demonstrations and flags made in this session
        self.harmful_seen = 0
        self._harmful_items: set[Hashable] = set()

    def notify(self, **delta: int) -> None:
        if delta.get("action", 0):
            self.actions += delta["action"]
        self.changed.emit(delta)

    def saw_harmful(self, item: Hashable) -> bool:
        """Count one harmful item seen (revealed, flagged, or shown unfolded), once per ``item`` in a session
        (``("comparison", 12)``, ``("prompt", 3)``, ...), whichever page showed it. True when it counted now."""
        if item in self._harmful_items:
            return False
        self._harmful_items.add(item)
        self.harmful_seen += 1
        self.harmful_seen_changed.emit(self.harmful_seen)
        return True

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fold_reason(self, prompt_tags: list[str], flags: list[tuple]) -> str | None:
        """Why content should be folded (None: show it): harmful (:meth:`harm_reason`) and folding is on."""
        if not self.prefs.get("safety/hide_flagged"):
            return None
        return self.harm_reason(prompt_tags, flags)

    @staticmethod
    def harm_reason(prompt_tags: list[str], flags: list[tuple]) -> str | None:
        """Why content counts as harmful (None: it does not): flagged, or the prompt is tagged red-team."""
        if flags:
            cats = sorted({f[1] for f in flags})
            return "flagged as " + ", ".join(c.replace("_", " ") for c in cats)
        red = sorted(RED_TEAM_TAGS.intersection(prompt_tags))
        if red:
            return f"the prompt is tagged {red[0]}"
        return None


def _now_iso() -> str:
    from workbench.store import now_iso

    return now_iso()
