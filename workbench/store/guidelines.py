"""The annotation guideline's versions and the project's ``meta`` key/value table (what a project records about
itself: its creation time, the demo it came from, its evaluation rounds)."""

from __future__ import annotations

from .connection import ProjectFile, like_prefix
from .records import now_iso


class GuidelineStore(ProjectFile):
    # ------------------------------------------------------------------ meta
    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta_with_prefix(self, prefix: str) -> dict[str, str]:
        """Every meta entry whose key starts with ``prefix`` (key → value)."""
        return dict(self.conn.execute("SELECT key, value FROM meta WHERE key LIKE ? ESCAPE '\\'", (like_prefix(prefix),)))

    # ------------------------------------------------------------------ guidelines
    def guideline(self) -> tuple[int, str]:
        """The current guideline (version, Markdown text)."""
        row = self.conn.execute("SELECT version, text FROM guideline ORDER BY version DESC LIMIT 1").fetchone()
        return (int(row[0]), row[1]) if row else (0, "")

    def guideline_version(self) -> int:
        return self.guideline()[0]

    def set_guideline(self, text: str) -> int:
        """Store a new version of the guideline if the text changed; returns the current version."""
        with self.transaction():
            version, current = self.guideline()
            if text == current:
                return version
            self.conn.execute("INSERT INTO guideline VALUES (?, ?, ?)", (version + 1, text, now_iso()))
        return version + 1

    def guideline_versions(self) -> list[tuple[int, str, str]]:
        return [tuple(r) for r in self.conn.execute("SELECT version, created_at, text FROM guideline ORDER BY version")]
