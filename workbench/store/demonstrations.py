"""Demonstrations (expert-written or expert-edited answers, stored as responses of origin ``expert``), the
"write a better answer" shortcut from a comparison, and the Write page's queue of prompts lacking a good answer."""

from __future__ import annotations

from ..errors import WorkbenchError
from .connection import ProjectFile
from .records import Demonstration, now_iso

# No live demonstration, no response that won a comparison, no live ranking.
_LACKS_GOOD_ANSWER = (
    "NOT EXISTS (SELECT 1 FROM demonstration d WHERE d.prompt_id = p.id AND d.retracted_at IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM comparison w WHERE w.prompt_id = p.id AND w.verdict IN ('a', 'b') AND w.retracted_at IS NULL) "
    "AND NOT EXISTS (SELECT 1 FROM ranking k WHERE k.prompt_id = p.id AND k.retracted_at IS NULL)"
)


class DemonstrationStore(ProjectFile):
    def add_demonstration(
        self,
        prompt_id: int,
        content: str,
        *,
        edited_from: int | None = None,
        note: str | None = None,
        time_spent_ms: int | None = None,
        source: str = "",
        guideline_version: int | None = None,
        created_at: str | None = None,
    ) -> tuple[int, int, bool]:
        """Store an expert-written answer as a response (origin ``expert``) and a demonstration pointing at it.
        Returns (demonstration id, response id, created)."""
        if not content.strip():
            raise WorkbenchError("a demonstration needs some text")
        with self.transaction():
            rid, _ = self.add_response(prompt_id, content, origin="expert", source=source)
            row = self.conn.execute("SELECT id FROM demonstration WHERE response_id = ?", (rid,)).fetchone()
            if row:
                return int(row[0]), rid, False
            gv = guideline_version if guideline_version is not None else self.guideline_version()
            cur = self.conn.execute(
                "INSERT INTO demonstration (prompt_id, response_id, edited_from, note, time_spent_ms, guideline_version, source, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, rid, edited_from, note, time_spent_ms, gv, source, created_at or now_iso()),
            )
        return int(cur.lastrowid), rid, True

    def write_better_answer(
        self, comparison_id: int, content: str, *, time_spent_ms: int | None = None, note: str | None = None
    ) -> tuple[int, list[int]]:
        """The expert's own answer beats both responses shown: one demonstration and, against each shown
        response, a judged comparison it wins (strength clear). Returns (demonstration id, comparison ids)."""
        with self.transaction():
            c = self.get_comparison(comparison_id)
            demo_id, rid, _ = self.add_demonstration(c.prompt_id, content, time_spent_ms=time_spent_ms, note=note)
            made = []
            for other in (c.response_a, c.response_b):
                if other == rid:
                    continue
                made.append(
                    self.add_comparison(
                        c.prompt_id, rid, other, source="expert", kind=c.kind,
                        # No side: the two were never shown side by side, so the Dashboard's position bias
                        # must not count the expert's own answer as a pick of the left.
                        verdict="a", strength="clear", left_side=None, note="written answer beats the shown response",
                    )
                )
        return demo_id, made

    def demonstrations(self) -> list[Demonstration]:
        """Every demonstration (retracted ones included), in id order."""
        return [Demonstration(*r) for r in self.conn.execute(
            "SELECT id, prompt_id, response_id, edited_from, note, source, retracted_at FROM demonstration ORDER BY id"
        )]

    def demonstration_response_id(self, demonstration_id: int) -> int:
        row = self.conn.execute("SELECT response_id FROM demonstration WHERE id = ?", (demonstration_id,)).fetchone()
        if row is None:
            raise WorkbenchError(f"no demonstration with id {demonstration_id}")
        return int(row[0])

    def lacks_good_answer(self, prompt_id: int) -> bool:
        """No live demonstration, no response that won a comparison, no live ranking."""
        return self.conn.execute(
            f"SELECT 1 FROM prompt p WHERE p.id = ? AND {_LACKS_GOOD_ANSWER}", (prompt_id,)
        ).fetchone() is not None

    def next_prompt_lacking_good_answer(
        self, after_id: int = 0, *, exclude: set[int] | frozenset[int] = frozenset()
    ) -> int | None:
        """The next prompt (id > ``after_id``, not in ``exclude``) that :meth:`lacks_good_answer`."""
        skip = sorted(exclude)
        not_skipped = f" AND p.id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        row = self.conn.execute(
            f"SELECT p.id FROM prompt p WHERE p.id > ? AND {_LACKS_GOOD_ANSWER}{not_skipped} ORDER BY p.id LIMIT 1",
            [after_id, *skip],
        ).fetchone()
        return int(row[0]) if row else None
