"""Preferences kept in QSettings: recent projects, safety and break settings, the retest share, the session's
target, the last page.

A ``Prefs`` can be pointed at an INI file (tests use a temporary one) so it never touches the user's settings.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

ORG, APP = "rlhf-workbench", "RLHF Workbench"
MAX_RECENT = 8

DEFAULTS: dict[str, object] = {
    "safety/hide_flagged": True,      # fold flagged and red-team content until revealed
    "safety/break_minutes": 50,       # remind to take a break after this long in a session
    "safety/break_after_harmful": 30, # ... or after this many harmful items seen
    "queue/retest_share": 0.05,       # share of already-judged items that come back, blind, as retests
    "render/markdown": True,          # Markdown (raw HTML shown as text) or plain text
    "render/first_chars": 20000,      # longer responses show this much first, then "show more"
    "session/target": 100,            # the session's goal in actions (judgments, rankings, answers, flags)
}


class Prefs:
    def __init__(self, ini_path: Path | None = None):
        self.settings = QSettings(str(ini_path), QSettings.IniFormat) if ini_path else QSettings(ORG, APP)
        self._cache: dict[str, object] = {}  # pages read some keys on every item: keep QSettings off that path

    def get(self, key: str):
        if key not in self._cache:
            self._cache[key] = self._read(key)
        return self._cache[key]

    def _read(self, key: str):
        default = DEFAULTS.get(key)
        value = self.settings.value(key, default)
        # INI files give strings back: coerce to the default's type.
        if isinstance(default, bool) and isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        if isinstance(default, int) and not isinstance(default, bool):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return value

    def set(self, key: str, value: object) -> None:
        self._cache.pop(key, None)
        self.settings.setValue(key, value)
        self.settings.sync()

    def recent_projects(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if v]

    def add_recent(self, path: Path | str) -> None:
        p = str(Path(path).resolve())
        recent = [p] + [r for r in self.recent_projects() if r != p]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self.settings.sync()
