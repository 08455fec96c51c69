"""Prompts (conversations awaiting the assistant's reply), their tags and their split (train or held out), and the
ways screens and jobs find them: by split, tag, source, title text or id."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from ..errors import WorkbenchError
from ..messages import canonical_json, last_user_text, prompt_hash, validate_messages
from ..taxonomy import SPLITS
from .connection import ProjectFile
from .records import Prompt, check_choice, now_iso


class PromptStore(ProjectFile):
    def add_prompt(
        self,
        messages: list[dict[str, str]],
        *,
        source: str = "",
        tags: Iterable[str] = (),
        split: str = "train",
        created_at: str | None = None,
    ) -> tuple[int, bool]:
        """Add a prompt (a conversation ending before the assistant's reply). Returns (id, created); an equal
        conversation already in the project is reused (its tags are extended)."""
        check_choice(split, SPLITS, "split")
        messages = validate_messages(messages)
        h = prompt_hash(messages)
        with self.transaction():
            row = self.conn.execute("SELECT id FROM prompt WHERE content_hash = ?", (h,)).fetchone()
            created = row is None
            if created:
                cur = self.conn.execute(
                    "INSERT INTO prompt (messages, title, source, split, content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (canonical_json(messages), last_user_text(messages)[:500], source, split, h, created_at or now_iso()),
                )
                pid = int(cur.lastrowid)
            else:
                pid = int(row[0])
            tags = [t for t in dict.fromkeys(tags) if t]
            if tags:
                self.conn.executemany("INSERT OR IGNORE INTO prompt_tag VALUES (?, ?)", [(pid, t) for t in tags])
        return pid, created

    def get_prompt(self, prompt_id: int) -> Prompt:
        row = self.conn.execute("SELECT id, messages, source, split FROM prompt WHERE id = ?", (prompt_id,)).fetchone()
        if row is None:
            raise WorkbenchError(f"no prompt with id {prompt_id}")
        return Prompt(row[0], json.loads(row[1]), row[2], row[3], self.prompt_tags(prompt_id))

    def prompt_tags(self, prompt_id: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT tag FROM prompt_tag WHERE prompt_id = ? ORDER BY tag", (prompt_id,))]

    def add_tags(self, prompt_id: int, tags: Iterable[str]) -> None:
        with self.transaction():
            self.conn.executemany("INSERT OR IGNORE INTO prompt_tag VALUES (?, ?)", [(prompt_id, t) for t in tags if t])

    def remove_tag(self, prompt_id: int, tag: str) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM prompt_tag WHERE prompt_id = ? AND tag = ?", (prompt_id, tag))

    def set_split(self, prompt_id: int, split: str) -> None:
        check_choice(split, SPLITS, "split")
        with self.transaction():
            self.conn.execute("UPDATE prompt SET split = ? WHERE id = ?", (split, prompt_id))

    def prompt_ids(self, *, split: str | None = None, tag: str | None = None, source: str | None = None) -> list[int]:
        sql, args = "SELECT p.id FROM prompt p", []
        where = []
        if tag:
            sql += " JOIN prompt_tag t ON t.prompt_id = p.id AND t.tag = ?"
            args.append(tag)
        if split:
            where.append("p.split = ?")
            args.append(split)
        if source:
            where.append("p.source = ?")
            args.append(source)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [r[0] for r in self.conn.execute(sql + " ORDER BY p.id", args)]

    def prompt_ids_with_title(self, text: str, *, split: str | None = None) -> list[int]:
        """Prompts whose title (last user turn) contains ``text``, in id order; none for an empty text."""
        if not text:
            return []
        sql = "SELECT id FROM prompt WHERE title LIKE ?" + (" AND split = ?" if split else "") + " ORDER BY id"
        return [r[0] for r in self.conn.execute(sql, [f"%{text}%", *([split] if split else [])])]

    def known_prompt_ids(self, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` name a prompt of this project."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        if not ids:
            return set()
        return {r[0] for r in self.conn.execute(f"SELECT id FROM prompt WHERE id IN ({','.join('?' * len(ids))})", ids)}

    def tags(self, *, split: str | None = None) -> list[str]:
        """Every tag in use (on prompts of ``split`` only, when given), sorted."""
        if split is None:
            return [r[0] for r in self.conn.execute("SELECT DISTINCT tag FROM prompt_tag ORDER BY tag")]
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT t.tag FROM prompt_tag t JOIN prompt p ON p.id = t.prompt_id WHERE p.split = ? ORDER BY t.tag",
            (split,),
        )]

    def prompt_count(self, split: str | None = None) -> int:
        """How many prompts (of ``split``, when given)."""
        if split is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM prompt").fetchone()[0])
        return int(self.conn.execute("SELECT COUNT(*) FROM prompt WHERE split = ?", (split,)).fetchone()[0])

    def prompts_without_pending(self, *, split: str = "train", after_id: int = 0, limit: int | None = None) -> list[int]:
        """Prompts of ``split`` (id > ``after_id``, in id order) with no pending comparison: ones a new round of
        candidates can go to without piling onto the queue."""
        sql = ("SELECT p.id FROM prompt p WHERE p.split = ? AND p.id > ? AND NOT EXISTS (SELECT 1 FROM comparison c"
               " WHERE c.prompt_id = p.id AND c.verdict IS NULL AND c.retracted_at IS NULL) ORDER BY p.id")
        args: list = [split, after_id]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [r[0] for r in self.conn.execute(sql, args)]

    def set_splits(self, prompt_ids: Sequence[int], split: str) -> int:
        """Move prompts to ``split`` in one transaction; returns how many changed."""
        check_choice(split, SPLITS, "split")
        ids = list(dict.fromkeys(int(i) for i in prompt_ids))
        changed = 0
        with self.transaction():
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                cur = self.conn.execute(
                    f"UPDATE prompt SET split = ? WHERE split != ? AND id IN ({','.join('?' * len(chunk))})",
                    [split, split, *chunk])
                changed += cur.rowcount
        return changed

    def prompts_in_training_snapshots(self, prompt_ids: Sequence[int] | None = None) -> set[int]:
        """Which prompts (of ``prompt_ids``, or of the project) a training run's snapshot refers to."""
        parts = [
            "SELECT t.prompt_id FROM run r JOIN snapshot_item s ON s.snapshot_id = r.snapshot_id"
            f" JOIN {table} t ON t.id = s.item_id AND s.item_type = '{item}'"
            for item, table in (("comparison", "comparison"), ("ranking", "ranking"),
                                ("demonstration", "demonstration"), ("flag", "safety_flag"))
        ]
        parts.append("SELECT s.item_id FROM run r JOIN snapshot_item s ON s.snapshot_id = r.snapshot_id"
                     " AND s.item_type = 'prompt'")
        found = {int(r[0]) for r in self.conn.execute(" UNION ".join(parts))}
        return found if prompt_ids is None else found & {int(i) for i in prompt_ids}

    def prompt_rows(self, *, text: str = "", split: str | None = None, limit: int = 500) -> list[tuple[int, str, str, str]]:
        """(id, split, source, title) of prompts whose title contains ``text`` (of ``split``), the first ``limit``."""
        sql, args = "SELECT id, split, source, title FROM prompt WHERE 1", []
        if text:
            sql += " AND title LIKE ?"
            args.append(f"%{text}%")
        if split:
            sql += " AND split = ?"
            args.append(split)
        return [tuple(r) for r in self.conn.execute(sql + " ORDER BY id LIMIT ?", [*args, int(limit)])]

    def has_prompt_with_responses(self, min_responses: int) -> bool:
        """Whether any prompt has at least ``min_responses`` responses (what ranking needs)."""
        return self.conn.execute("SELECT 1 FROM response GROUP BY prompt_id HAVING COUNT(*) >= ? LIMIT 1",
                                 (min_responses,)).fetchone() is not None
