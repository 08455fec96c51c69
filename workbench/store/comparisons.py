"""Comparisons (two responses to one prompt and the expert's verdict): adding and judging them, the queue of
pending ones (served in id order by a partial index, so the next item stays fast on a million comparisons), blind
retests, undo and retraction, and the comparisons of a blind-evaluation round."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import WorkbenchError
from ..messages import canonical_json
from ..taxonomy import CRITERIA, CRITERION_VERDICTS, STRENGTHS, VERDICTS
from .connection import ProjectFile
from .records import Comparison, Undone, check_choice, now_iso

_COLUMNS = (
    "id, prompt_id, response_a, response_b, verdict, strength, left_side, criteria, note, time_spent_ms,"
    " guideline_version, judged_at, source, kind, retest_of, retracted_at"
)
_GET_SQL = f"SELECT {_COLUMNS} FROM comparison WHERE id = ?"
# A live judgment the expert made in this app: imported judgments carry no guideline version (see
# importers.staging), and retesting them would measure someone else's consistency, not the expert's.
_OWN = "verdict IS NOT NULL AND retracted_at IS NULL AND guideline_version IS NOT NULL"


def _queue_filters(
    tag: str | None, source: str | None, kind: str | None, exclude: Iterable[int]
) -> tuple[str, list[Any], str, list[Any]]:
    """(join, its args, extra WHERE terms, their args) narrowing the pending comparisons ``c`` of a queue query."""
    join, join_args = ("", []) if not tag else (" JOIN prompt_tag t ON t.prompt_id = c.prompt_id AND t.tag = ?", [tag])
    where, args = "", []
    for column, value in (("source", source), ("kind", kind)):
        if value:
            where += f" AND c.{column} = ?"
            args.append(value)
    skip = list(exclude)
    if skip:
        where += f" AND c.id NOT IN ({','.join('?' * len(skip))})"
        args.extend(skip)
    return join, join_args, where, args


def _comparison(row: Sequence[Any]) -> Comparison:
    values = list(row)
    values[7] = json.loads(values[7]) if values[7] else None
    return Comparison(*values)


class ComparisonStore(ProjectFile):
    def find_comparison(self, response_1: int, response_2: int, *, judged_only: bool = False) -> int | None:
        """An existing comparison of these two responses (either order), if any."""
        extra = " AND verdict IS NOT NULL" if judged_only else ""
        row = self.conn.execute(
            "SELECT id FROM comparison WHERE ((response_a = ? AND response_b = ?) OR (response_a = ? AND response_b = ?))"
            + extra + " AND retracted_at IS NULL LIMIT 1",
            (response_1, response_2, response_2, response_1),
        ).fetchone()
        return int(row[0]) if row else None

    def add_comparison(
        self,
        prompt_id: int,
        response_a: int,
        response_b: int,
        *,
        source: str = "",
        kind: str = "train",
        retest_of: int | None = None,
        created_at: str | None = None,
        **judgment: Any,
    ) -> int:
        """Add a comparison of two responses to one prompt: pending unless a verdict is given in ``judgment``."""
        if response_a == response_b:
            raise WorkbenchError("a comparison needs two different responses")
        check_choice(kind, ("train", "eval"), "kind")
        with self.transaction():
            for rid in (response_a, response_b):
                row = self.conn.execute("SELECT prompt_id FROM response WHERE id = ?", (rid,)).fetchone()
                if row is None or row[0] != prompt_id:
                    raise WorkbenchError(f"response {rid} does not belong to prompt {prompt_id}")
            cur = self.conn.execute(
                "INSERT INTO comparison (prompt_id, response_a, response_b, source, kind, retest_of, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, response_a, response_b, source, kind, retest_of, created_at or now_iso()),
            )
            cid = int(cur.lastrowid)
            if judgment.get("verdict") is not None:
                self.judge(cid, **judgment)
        return cid

    def judge(
        self,
        comparison_id: int,
        verdict: str,
        *,
        strength: str | None = None,
        left_side: str | None = None,
        criteria: Mapping[str, str] | None = None,
        note: str | None = None,
        time_spent_ms: int | None = None,
        guideline_version: int | None = None,
        judged_at: str | None = None,
    ) -> None:
        """Record a verdict (``a``/``b`` refer to response_a/response_b, not to the screen side)."""
        check_choice(verdict, VERDICTS, "verdict")
        if strength is not None:
            check_choice(strength, STRENGTHS, "strength")
            if verdict not in ("a", "b"):
                raise WorkbenchError("a strength applies only to a verdict for A or B, not to tie or both bad")
        if left_side is not None:
            check_choice(left_side, ("a", "b"), "left_side")
        if criteria:
            for k, v in criteria.items():
                check_choice(k, CRITERIA, "criterion")
                check_choice(v, CRITERION_VERDICTS, f"verdict for {k}")
        with self.transaction():
            gv = guideline_version if guideline_version is not None else self.guideline_version()
            cur = self.conn.execute(
                "UPDATE comparison SET verdict = ?, strength = ?, left_side = COALESCE(?, left_side), criteria = ?,"
                " note = COALESCE(?, note), time_spent_ms = ?, guideline_version = ?, judged_at = ? WHERE id = ?",
                (
                    verdict, strength, left_side, canonical_json(dict(criteria)) if criteria else None, note,
                    time_spent_ms, gv, judged_at or now_iso(), comparison_id,
                ),
            )
            if cur.rowcount != 1:
                raise WorkbenchError(f"no comparison with id {comparison_id}")

    def set_note(self, comparison_id: int, note: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE comparison SET note = ? WHERE id = ?", (note, comparison_id))

    def get_comparison(self, comparison_id: int) -> Comparison:
        row = self.conn.execute(_GET_SQL, (comparison_id,)).fetchone()
        if row is None:
            raise WorkbenchError(f"no comparison with id {comparison_id}")
        return _comparison(row)

    def next_pending(
        self,
        after_id: int = 0,
        *,
        source: str | None = None,
        tag: str | None = None,
        kind: str | None = None,
        exclude: Iterable[int] = (),
    ) -> Comparison | None:
        """The next unjudged comparison with id > ``after_id`` (the queue runs in id order), optionally filtered."""
        # INDEXED BY: the planner would otherwise sort the whole pending set on a big project.
        join, join_args, where, where_args = _queue_filters(tag, source, kind, exclude)
        sql = (f"SELECT c.id FROM comparison c INDEXED BY comparison_pending{join}"
               f" WHERE c.verdict IS NULL AND c.retracted_at IS NULL AND c.id > ?{where}")
        row = self.conn.execute(sql + " ORDER BY c.id LIMIT 1", [*join_args, after_id, *where_args]).fetchone()
        return self.get_comparison(int(row[0])) if row else None

    def pending_count(self, kind: str | None = None) -> int:
        """Pending comparisons (of ``kind``, train or eval, when given)."""
        sql = "SELECT COUNT(*) FROM comparison WHERE verdict IS NULL AND retracted_at IS NULL"
        if kind is None:
            return self.conn.execute(sql).fetchone()[0]
        return self.conn.execute(sql + " AND kind = ?", (kind,)).fetchone()[0]

    def pending_ids(self, *, kind: str | None = "train", limit: int | None = None) -> list[int]:
        """Pending comparisons (of ``kind``) in queue order, the first ``limit`` of them."""
        sql = "SELECT id FROM comparison INDEXED BY comparison_pending WHERE verdict IS NULL AND retracted_at IS NULL"
        args: list[Any] = []
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [r[0] for r in self.conn.execute(sql, args)]

    def next_pending_by_metric(
        self,
        run_id: int,
        key: str,
        after: tuple[float, int] | None = None,
        *,
        source: str | None = None,
        tag: str | None = None,
        exclude: Iterable[int] = (),
    ) -> tuple[float, int] | None:
        """(value, comparison id) of the pending comparison with the next-smallest value of metric ``key`` of run
        ``run_id`` (a score run stores one row per comparison, ``step`` = its id), after ``after`` in (value, id)
        order: a seek on the ``metric_run_key_value`` index, so it stays fast on a big queue."""
        join, join_args, where, where_args = _queue_filters(tag, source, None, exclude)
        sql = (f"SELECT m.value, m.step FROM metric m INDEXED BY metric_run_key_value JOIN comparison c ON c.id = m.step"
               f"{join} WHERE m.run_id = ? AND m.key = ? AND m.value IS NOT NULL AND c.verdict IS NULL"
               f" AND c.retracted_at IS NULL{where}")
        args: list[Any] = [*join_args, run_id, key, *where_args]
        if after is not None:
            sql += " AND (m.value > ? OR (m.value = ? AND m.step > ?))"
            args += [after[0], after[0], after[1]]
        row = self.conn.execute(sql + " ORDER BY m.value, m.step LIMIT 1", args).fetchone()
        return (float(row[0]), int(row[1])) if row else None

    def pending_with_metric_count(self, run_id: int, key: str) -> int:
        """How many pending comparisons have a value of metric ``key`` in run ``run_id``."""
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM metric m JOIN comparison c ON c.id = m.step WHERE m.run_id = ? AND m.key = ?"
            " AND c.verdict IS NULL AND c.retracted_at IS NULL", (run_id, key)).fetchone()[0])

    def undo(self, comparison_id: int) -> Undone:
        """Take back a verdict and return the item now pending in its place. If no snapshot holds the judgment it is
        erased (the same row is pending again); otherwise the judged row is kept, marked retracted, and a fresh
        pending copy takes its place in the queue."""
        with self.transaction():
            c = self.get_comparison(comparison_id)
            if c.verdict is None:
                raise WorkbenchError(f"comparison {comparison_id} has no judgment to undo")
            if self.in_snapshot("comparison", comparison_id):
                self.conn.execute("UPDATE comparison SET retracted_at = ? WHERE id = ?", (now_iso(), comparison_id))
                fresh = self.add_comparison(
                    c.prompt_id, c.response_a, c.response_b, source=c.source, kind=c.kind, retest_of=c.retest_of
                )
                return Undone("retracted", self.get_comparison(fresh))
            self.conn.execute(
                "UPDATE comparison SET verdict = NULL, strength = NULL, criteria = NULL, time_spent_ms = NULL,"
                " guideline_version = NULL, judged_at = NULL WHERE id = ?",
                (comparison_id,),
            )
            return Undone("cleared", self.get_comparison(comparison_id))

    def undo_judgment(self, comparison_id: int) -> str:
        """:meth:`undo`, answering only how: ``"cleared"`` or ``"retracted"``."""
        return self.undo(comparison_id).how

    def change_verdict(self, comparison_id: int, verdict: str, strength: str | None) -> int:
        """Change a past judgment. One already in a snapshot is retracted and judged afresh as a new row (old runs
        stay reproducible); otherwise it is overwritten. Returns the id now holding the judgment."""
        c = self.get_comparison(comparison_id)
        with self.transaction():
            target = self.undo(comparison_id).item.id if self.in_snapshot("comparison", comparison_id) else comparison_id
            self.judge(target, verdict, strength=strength, left_side=c.left_side, criteria=c.criteria, note=c.note,
                       time_spent_ms=c.time_spent_ms)
        return target

    def retract(self, item_type: str, item_id: int) -> str:
        """Withdraw a judgment, ranking, demonstration or flag: deleted when no snapshot holds it, else marked
        retracted so old runs stay reproducible. Returns ``"deleted"`` or ``"retracted"``."""
        table = {"comparison": "comparison", "ranking": "ranking", "demonstration": "demonstration", "flag": "safety_flag"}
        if item_type not in table:
            raise WorkbenchError(f"cannot retract a {item_type}")
        with self.transaction():
            # A row that a snapshot holds, or that a retest points at, is kept and marked: deleting an original
            # would cut its retest loose and let the retest pass for an ordinary judgment.
            has_retest = item_type in ("comparison", "ranking") and self.conn.execute(
                f"SELECT 1 FROM {table[item_type]} WHERE retest_of = ? LIMIT 1", (item_id,)
            ).fetchone()
            if has_retest or self.in_snapshot(item_type, item_id):
                self.conn.execute(f"UPDATE {table[item_type]} SET retracted_at = ? WHERE id = ?", (now_iso(), item_id))
                return "retracted"
            if item_type == "demonstration":
                row = self.conn.execute("SELECT response_id FROM demonstration WHERE id = ?", (item_id,)).fetchone()
                self.conn.execute("DELETE FROM demonstration WHERE id = ?", (item_id,))
                if row:
                    self._delete_response_if_unused(row[0])
            else:
                self.conn.execute(f"DELETE FROM {table[item_type]} WHERE id = ?", (item_id,))
            return "deleted"

    def retract_all(self, items: Sequence[tuple[str, int]]) -> list[str]:
        """:meth:`retract` each (item type, id) in one transaction: one action's rows go together or not at all."""
        with self.transaction():
            return [self.retract(item_type, item_id) for item_type, item_id in items]

    def _delete_response_if_unused(self, response_id: int) -> None:
        used = self.conn.execute(
            "SELECT 1 FROM comparison WHERE response_a = ?1 OR response_b = ?1 UNION ALL "
            "SELECT 1 FROM ranking_entry WHERE response_id = ?1 UNION ALL SELECT 1 FROM demonstration WHERE response_id = ?1 "
            "UNION ALL SELECT 1 FROM safety_flag WHERE response_id = ?1 LIMIT 1",
            (response_id,),
        ).fetchone()
        if not used:
            self.conn.execute("DELETE FROM response WHERE id = ?", (response_id,))

    def add_retest(self, comparison_id: int) -> int:
        """A blind repeat of a judged comparison, linked to it (kept out of training and export by default)."""
        c = self.get_comparison(comparison_id)
        return self.add_comparison(c.prompt_id, c.response_a, c.response_b, source=c.source, kind=c.kind, retest_of=c.id)

    # ------------------------------------------------------------------ lists
    def comparisons(self, *, source: str | None = None, kind: str | None = None) -> list[Comparison]:
        """Every comparison (of ``source`` and ``kind``, when given), in id order. For small sets (a round, a
        source): the queue serves the pending ones one at a time with :meth:`next_pending`."""
        where, args = [], []
        if source is not None:
            where.append("source = ?")
            args.append(source)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        sql = f"SELECT {_COLUMNS} FROM comparison" + (" WHERE " + " AND ".join(where) if where else "")
        return [_comparison(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def comparisons_by_id(self, ids: Sequence[int]) -> dict[int, Comparison]:
        """The comparisons of these ids that exist (id → comparison)."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        out: dict[int, Comparison] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in self.conn.execute(f"SELECT {_COLUMNS} FROM comparison WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[r[0]] = _comparison(r)
        return out

    def comparison_sources(self) -> list[str]:
        """Every named source of comparisons, sorted (the queue's source filter)."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT source FROM comparison WHERE source != '' ORDER BY source")]

    # ------------------------------------------------------------------ retests
    def own_judgment_time_range(self) -> tuple[str, str] | None:
        """(first, last) ``judged_at`` of the expert's own live judgments (made in this app), or None."""
        # Two statements: SQLite answers a lone MIN or MAX from the index, but MIN and MAX together by a scan.
        lo = self.conn.execute(f"SELECT MIN(judged_at) FROM comparison WHERE {_OWN}").fetchone()[0]
        hi = self.conn.execute(f"SELECT MAX(judged_at) FROM comparison WHERE {_OWN}").fetchone()[0]
        return None if lo is None else (lo, hi)

    def retest_candidates(
        self, judged_from: str, *, source: str | None = None, tag: str | None = None, limit: int = 16
    ) -> list[int]:
        """Up to ``limit`` of the expert's own live, non-retest judgments made at or after ``judged_from``, oldest
        first (a seek on the ``judged_at`` index, never a sort of the whole table)."""
        args: list[Any] = [judged_from]
        sql = (
            "SELECT c.id FROM comparison c WHERE c.verdict IS NOT NULL AND c.judged_at >= ? "
            "AND c.retest_of IS NULL AND c.retracted_at IS NULL AND c.guideline_version IS NOT NULL"
        )
        if source:
            sql += " AND c.source = ?"
            args.append(source)
        if tag:
            sql += " AND EXISTS (SELECT 1 FROM prompt_tag t WHERE t.prompt_id = c.prompt_id AND t.tag = ?)"
            args.append(tag)
        args.append(int(limit))
        return [r[0] for r in self.conn.execute(sql + " ORDER BY c.judged_at LIMIT ?", args)]

    def has_retest(self, comparison_id: int) -> bool:
        """Whether a retest row points at this comparison."""
        row = self.conn.execute("SELECT 1 FROM comparison WHERE retest_of = ? LIMIT 1", (comparison_id,)).fetchone()
        return row is not None

    # ------------------------------------------------------------------ blind-evaluation rounds
    def eval_items(self, source: str) -> list[tuple[int, int, int, int, str | None]]:
        """(id, prompt id, response_a, response_b, verdict) of a round's live blind comparisons (``kind='eval'``,
        not retracted, no retests), in id order; verdict None while pending."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT id, prompt_id, response_a, response_b, verdict FROM comparison WHERE source = ? AND kind = 'eval'"
            " AND retracted_at IS NULL AND retest_of IS NULL ORDER BY id", (source,)
        )]

    def has_eval_item(self, source: str, prompt_id: int) -> bool:
        """Whether a blind comparison of this round's source is already queued for the prompt."""
        return self.conn.execute(
            "SELECT 1 FROM comparison WHERE source = ? AND prompt_id = ? AND kind = 'eval' LIMIT 1", (source, prompt_id)
        ).fetchone() is not None

    def both_bad_prompt_ids(self) -> list[int]:
        """Prompts with a live both-bad verdict, in id order (the Write page serves them first)."""
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT prompt_id FROM comparison WHERE verdict = 'both_bad' AND retracted_at IS NULL ORDER BY prompt_id"
        )]
