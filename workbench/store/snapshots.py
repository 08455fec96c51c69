"""Snapshots: the frozen set of rows (item type → ids) a training run or an export used, with a content hash over the
ids and the judged content they point at, so every run is reproducible after later edits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..messages import canonical_json
from .connection import ProjectFile
from .records import now_iso

# Every item type a snapshot can hold whose rows belong to one prompt (item type → table).
_PROMPT_OF_ITEM = {
    "comparison": "comparison",
    "ranking": "ranking",
    "demonstration": "demonstration",
    "flag": "safety_flag",
    "response": "response",
}


class SnapshotStore(ProjectFile):
    def create_snapshot(
        self, kind: str, items: Mapping[str, Iterable[int]], *, options: Mapping[str, Any] | None = None, note: str = ""
    ) -> int:
        """Freeze a set of rows (item type → ids) with a content hash over them, so a run or export is reproducible."""
        frozen = {t: sorted(set(ids)) for t, ids in items.items()}
        counts = {t: len(ids) for t, ids in frozen.items()}
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO snapshot (kind, content_hash, counts, options, note, created_at) VALUES (?, '', ?, ?, ?, ?)",
                (kind, canonical_json(counts), canonical_json(dict(options or {})), note, now_iso()),
            )
            sid = int(cur.lastrowid)
            self.conn.executemany(
                "INSERT INTO snapshot_item VALUES (?, ?, ?)", ((sid, t, i) for t, ids in frozen.items() for i in ids)
            )
            self.conn.execute("UPDATE snapshot SET content_hash = ? WHERE id = ?", (self._snapshot_digest(sid, kind), sid))
        return sid

    # What a snapshot's hash covers besides the ids: the judged content of each row (not volatile notes).
    _SNAPSHOT_CONTENT_SQL = {
        "comparison": "SELECT c.id, ra.content_hash, rb.content_hash, c.verdict, c.strength FROM snapshot_item s "
        "JOIN comparison c ON c.id = s.item_id JOIN response ra ON ra.id = c.response_a "
        "JOIN response rb ON rb.id = c.response_b WHERE s.snapshot_id = ? AND s.item_type = 'comparison' ORDER BY c.id",
        "demonstration": "SELECT d.id, r.content_hash FROM snapshot_item s JOIN demonstration d ON d.id = s.item_id "
        "JOIN response r ON r.id = d.response_id WHERE s.snapshot_id = ? AND s.item_type = 'demonstration' ORDER BY d.id",
        "ranking": "SELECT e.ranking_id, r.content_hash, e.rank FROM snapshot_item s JOIN ranking_entry e ON e.ranking_id = s.item_id "
        "JOIN response r ON r.id = e.response_id WHERE s.snapshot_id = ? AND s.item_type = 'ranking' ORDER BY e.ranking_id, r.content_hash",
        "flag": "SELECT f.id, f.category, f.present, f.severity FROM snapshot_item s JOIN safety_flag f ON f.id = s.item_id "
        "WHERE s.snapshot_id = ? AND s.item_type = 'flag' ORDER BY f.id",
    }

    def _snapshot_digest(self, snapshot_id: int, kind: str) -> str:
        """SHA-256 over the snapshot's kind, item ids and the content they point at, streamed from SQL."""
        digest = hashlib.sha256(kind.encode())
        types = [r[0] for r in self.conn.execute(
            "SELECT DISTINCT item_type FROM snapshot_item WHERE snapshot_id = ? ORDER BY item_type", (snapshot_id,))]
        for t in types:
            digest.update(f"\x00{t}\x00".encode())
            for (i,) in self.conn.execute(
                "SELECT item_id FROM snapshot_item WHERE snapshot_id = ? AND item_type = ? ORDER BY item_id", (snapshot_id, t)
            ):
                digest.update(b"%d," % i)
            sql = self._SNAPSHOT_CONTENT_SQL.get(t)
            if sql:
                for row in self.conn.execute(sql, (snapshot_id,)):
                    digest.update(repr(row).encode())
        return digest.hexdigest()

    def snapshot_items(self, snapshot_id: int, item_type: str) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT item_id FROM snapshot_item WHERE snapshot_id = ? AND item_type = ? ORDER BY item_id", (snapshot_id, item_type)
            )
        ]

    def snapshots(self) -> list[dict[str, Any]]:
        return [
            {"id": r[0], "kind": r[1], "content_hash": r[2], "counts": json.loads(r[3]), "options": json.loads(r[4]), "created_at": r[5]}
            for r in self.conn.execute("SELECT id, kind, content_hash, counts, options, created_at FROM snapshot ORDER BY id")
        ]

    def get_snapshot(self, snapshot_id: int) -> dict[str, Any] | None:
        """The snapshot's row (id, kind, content_hash, counts, options, note, created_at), or None."""
        row = self.conn.execute(
            "SELECT id, kind, content_hash, counts, options, note, created_at FROM snapshot WHERE id = ?", (snapshot_id,)
        ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "kind": row[1], "content_hash": row[2], "counts": json.loads(row[3]),
                "options": json.loads(row[4]) if row[4] else {}, "note": row[5], "created_at": row[6]}

    def snapshot_sizes(self, snapshot_id: int) -> dict[str, int]:
        """How many items of each type a snapshot holds."""
        rows = self.conn.execute(
            "SELECT item_type, COUNT(*) FROM snapshot_item WHERE snapshot_id = ? GROUP BY item_type", (snapshot_id,))
        return {t: int(n) for t, n in rows}

    def snapshot_prompt_ids(self, snapshot_id: int) -> list[int]:
        """Every prompt a snapshot refers to: its ``prompt`` items and the prompts of its comparisons, rankings,
        demonstrations, flags and responses, in id order."""
        parts = ["SELECT item_id FROM snapshot_item WHERE snapshot_id = ? AND item_type = 'prompt'"]
        parts += [f"SELECT t.prompt_id FROM snapshot_item s JOIN {table} t ON t.id = s.item_id "
                  f"WHERE s.snapshot_id = ? AND s.item_type = '{item}'" for item, table in _PROMPT_OF_ITEM.items()]
        return sorted(r[0] for r in self.conn.execute(" UNION ".join(parts), [snapshot_id] * len(parts)))

    def in_snapshot(self, item_type: str, item_id: int) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM snapshot_item WHERE item_type = ? AND item_id = ? LIMIT 1", (item_type, item_id)
            ).fetchone()
            is not None
        )

    def record_snapshot(
        self, kind: str, content_hash: str, counts: Mapping[str, int], *, options: Mapping[str, Any] | None = None,
        note: str = "",
    ) -> int:
        """A snapshot row without items, whose hash the caller computed over what it handed over (a whole-project
        export: item rows would put every judgment "in a snapshot" and turn each later undo into a retraction)."""
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO snapshot (kind, content_hash, counts, options, note, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, content_hash, canonical_json(dict(counts)), canonical_json(dict(options or {})), note, now_iso()),
            )
        return int(cur.lastrowid)

    def delete_snapshot(self, snapshot_id: int) -> None:
        """Drop a snapshot and its items (one taken for an export that then failed)."""
        with self.transaction():
            self.conn.execute("DELETE FROM snapshot WHERE id = ?", (snapshot_id,))
