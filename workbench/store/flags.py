"""Safety labels: a response (or the prompt text) × a category of the project's taxonomy (built-in, extendable) ×
a severity, or the record that a category was checked and is absent."""

from __future__ import annotations

from ..errors import WorkbenchError
from ..taxonomy import SEVERITIES
from .connection import ProjectFile, like_prefix
from .records import Flag, check_choice, now_iso

_PRESENT = "present = 1 AND retracted_at IS NULL"


class FlagStore(ProjectFile):
    def categories(self) -> list[tuple[str, str, str, bool]]:
        return [
            (k, lbl, d, bool(b))
            for k, lbl, d, b in self.conn.execute("SELECT key, label, description, builtin FROM flag_category ORDER BY builtin DESC, rowid")
        ]

    def add_category(self, key: str, label: str, description: str = "") -> None:
        """Extend this project's taxonomy with a category of its own."""
        if not key or not key.replace("_", "").replace("-", "").isalnum():
            raise WorkbenchError(f"category key {key!r}: use letters, digits, '-' and '_'")
        with self.transaction():
            self.conn.execute(
                "INSERT INTO flag_category (key, label, description, builtin) VALUES (?, ?, ?, 0) "
                "ON CONFLICT(key) DO UPDATE SET label = excluded.label, description = excluded.description",
                (key, label, description),
            )

    def add_flag(
        self,
        prompt_id: int,
        category: str,
        severity: str | None = "medium",
        *,
        response_id: int | None = None,
        note: str | None = None,
        present: bool = True,
        source: str = "",
        guideline_version: int | None = None,
        created_at: str | None = None,
    ) -> int:
        """Flag a response (or, with no response, the prompt text) in a category with a severity. ``present=False``
        records that the category was checked and is absent (a negative label for the safety classifier)."""
        if present:
            check_choice(severity, SEVERITIES, "severity")
        elif severity is not None:
            check_choice(severity, SEVERITIES, "severity")
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM flag_category WHERE key = ?", (category,)).fetchone() is None:
                raise WorkbenchError(f"unknown flag category {category!r}; add it to the project's taxonomy first")
            gv = guideline_version if guideline_version is not None else self.guideline_version()
            cur = self.conn.execute(
                "INSERT INTO safety_flag (prompt_id, response_id, category, present, severity, note, source, guideline_version, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, response_id, category, int(present), severity, note, source, gv, created_at or now_iso()),
            )
        return int(cur.lastrowid)

    def flags_for_response(self, response_id: int) -> list[tuple[int, str, str, str | None]]:
        return [
            tuple(r)
            for r in self.conn.execute(
                f"SELECT id, category, severity, note FROM safety_flag WHERE response_id = ? AND {_PRESENT}",
                (response_id,),
            )
        ]

    def flags_for_prompt(self, prompt_id: int) -> list[tuple[int, str, str, str | None]]:
        """(id, category, severity, note) of the live flags on the prompt's own text (not on its responses)."""
        return [
            tuple(r)
            for r in self.conn.execute(
                f"SELECT id, category, severity, note FROM safety_flag WHERE prompt_id = ? AND response_id IS NULL AND {_PRESENT}",
                (prompt_id,),
            )
        ]

    def flags(self) -> list[Flag]:
        """Every safety label (known-absent and retracted ones included), in id order."""
        return [Flag(*r[:6], present=bool(r[6])) for r in self.conn.execute(
            "SELECT id, prompt_id, response_id, category, severity, note, present FROM safety_flag ORDER BY id"
        )]

    def get_flag(self, flag_id: int) -> Flag:
        row = self.conn.execute(
            "SELECT id, prompt_id, response_id, category, severity, note, present FROM safety_flag WHERE id = ?", (flag_id,)
        ).fetchone()
        if row is None:
            raise WorkbenchError(f"no flag with id {flag_id}")
        return Flag(*row[:6], present=bool(row[6]))

    def flag_notes(self, category: str, note_prefix: str, *, source: str | None = None) -> dict[int, str]:
        """Response id → note of the response flags in ``category`` whose note starts with ``note_prefix`` (of one
        ``source`` when given): how an importer reads back what it recorded in notes."""
        sql = ("SELECT response_id, note FROM safety_flag WHERE category = ? AND response_id IS NOT NULL"
               " AND note LIKE ? ESCAPE '\\'")
        args: list[str] = [category, like_prefix(note_prefix)]
        if source:
            sql += " AND source = ?"
            args.append(source)
        return {int(rid): note for rid, note in self.conn.execute(sql, args)}

    def check_nothing_harmful(self, prompt_id: int, response_id: int) -> list[int]:
        """Record that the expert read a response and found nothing harmful: one known-absent label per category of
        the taxonomy (negatives for the safety classifier), in one transaction. A response with a live flag is
        refused: "nothing harmful" would contradict it; categories already recorded as absent are not repeated.
        Returns the new labels' ids (retract them to undo)."""
        with self.transaction():
            row = self.conn.execute("SELECT prompt_id FROM response WHERE id = ?", (response_id,)).fetchone()
            if row is None or row[0] != prompt_id:
                raise WorkbenchError(f"response {response_id} does not belong to prompt {prompt_id}")
            flagged = self.flags_for_response(response_id)
            if flagged:
                cats = ", ".join(sorted({f[1].replace("_", " ") for f in flagged}))
                raise WorkbenchError(
                    f"response {response_id} is flagged as {cats}: retract the flag in History before marking it "
                    "as checked with nothing harmful")
            done = {r[0] for r in self.conn.execute(
                "SELECT category FROM safety_flag WHERE response_id = ? AND present = 0 AND retracted_at IS NULL",
                (response_id,),
            )}
            return [
                self.add_flag(prompt_id, key, None, response_id=response_id, present=False, note="checked: nothing harmful")
                for key, *_ in self.categories() if key not in done
            ]
