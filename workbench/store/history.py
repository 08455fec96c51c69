"""The History page's query: every judgment, ranking, demonstration and flag in one list, newest first, filtered by
kind, text, verdict, tag and date, read a page at a time.

Pages are keyset-paginated: the list is ordered by (time, kind, id), newest first, and the next page starts after
the last row of the previous one (``after``), never at an offset. Each kind is read from its own time index and
limited on its own before the union, so a page costs a few index seeks whatever the size of the project, and
nothing counts the whole table. Rows without a time (none are written today, but an imported file may hold some)
come last.
"""

from __future__ import annotations

from dataclasses import dataclass

from .connection import ProjectFile
from .records import HistoryRow

HISTORY_KINDS = ("comparison", "ranking", "demonstration", "flag")


@dataclass(frozen=True)
class _Kind:
    select: str    # SELECT ... FROM ... WHERE <always true or the kind's own condition>
    when: str      # the time column (indexed)
    key: str       # the id column
    text: str      # the column searched besides the prompt's title


# Each select yields: kind, id, when, prompt_id, title, detail, retracted, verdict, strength, left_side, retest, note
_KINDS = {
    "comparison": _Kind(
        "SELECT 'comparison' AS kind, c.id AS id, COALESCE(c.judged_at, '') AS at, c.prompt_id, p.title, '',"
        " c.retracted_at IS NOT NULL, c.verdict, c.strength, c.left_side, c.retest_of IS NOT NULL, c.note "
        "FROM comparison c JOIN prompt p ON p.id = c.prompt_id WHERE c.verdict IS NOT NULL",
        "c.judged_at", "c.id", "c.note",
    ),
    "ranking": _Kind(
        "SELECT 'ranking' AS kind, k.id AS id, COALESCE(k.judged_at, '') AS at, k.prompt_id, p.title, "
        "(SELECT group_concat(n, ' ') FROM (SELECT '#' || e.response_id || ' → ' || e.rank AS n FROM ranking_entry e"
        " WHERE e.ranking_id = k.id ORDER BY e.rank)),"
        " k.retracted_at IS NOT NULL, NULL, NULL, NULL, k.retest_of IS NOT NULL, k.note "
        "FROM ranking k JOIN prompt p ON p.id = k.prompt_id WHERE 1",
        "k.judged_at", "k.id", "k.note",
    ),
    "demonstration": _Kind(
        "SELECT 'demonstration' AS kind, d.id AS id, COALESCE(d.created_at, '') AS at, d.prompt_id, p.title,"
        " substr(r.content, 1, 120), d.retracted_at IS NOT NULL, NULL, NULL, NULL, 0, d.note "
        "FROM demonstration d JOIN prompt p ON p.id = d.prompt_id JOIN response r ON r.id = d.response_id WHERE 1",
        "d.created_at", "d.id", "r.content",
    ),
    "flag": _Kind(
        "SELECT 'flag' AS kind, f.id AS id, COALESCE(f.created_at, '') AS at, f.prompt_id, p.title, "
        "f.category || ' · ' || CASE WHEN f.present = 0 THEN 'checked, absent' ELSE f.severity END"
        " || CASE WHEN f.response_id IS NULL THEN ' · on the prompt' ELSE ' · response #' || f.response_id END,"
        " f.retracted_at IS NOT NULL, NULL, NULL, NULL, 0, f.note "
        "FROM safety_flag f JOIN prompt p ON p.id = f.prompt_id WHERE 1",
        "f.created_at", "f.id", "f.note",
    ),
}

# A verdict for the response on a screen side: the one shown there (a judgment never shown: ``a`` on the left).
_SCREEN_SIDES = {"left": "=", "right": "!="}

# Where a page ends: the (time, kind, id) of its last row; the next page starts after it.
HistoryCursor = tuple[str, str, int]


def _after(kind: str, spec: _Kind, after: HistoryCursor) -> list[tuple[str, list]]:
    """The conditions (each a separate select) that keep the rows of ``kind`` coming after ``after``."""
    when, last_kind, last_id = after
    if when == "":  # the last page ended among the rows without a time: only those remain
        if kind > last_kind:
            return []
        if kind == last_kind:
            return [(f"{spec.when} IS NULL AND {spec.key} < ?", [last_id])]
        return [(f"{spec.when} IS NULL", [])]
    if kind < last_kind:
        timed = (f"{spec.when} <= ?", [when])
    elif kind == last_kind:
        timed = (f"{spec.when} <= ? AND ({spec.when} < ? OR {spec.key} < ?)", [when, when, last_id])
    else:
        timed = (f"{spec.when} < ?", [when])
    return [timed, (f"{spec.when} IS NULL", [])]


class HistoryStore(ProjectFile):
    def history(
        self,
        *,
        kind: str | None = None,
        text: str = "",
        verdict: str | None = None,
        tag: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        after: HistoryCursor | None = None,
        limit: int = 500,
    ) -> list[HistoryRow]:
        """One page of every judgment, ranking, demonstration and flag, newest first, filtered by kind, text (in the
        prompt's title or the item), verdict (comparisons only: as stored, ``a``/``b``/``tie``/``both_bad``, or for
        the side shown, ``left``/``right``), tag and date (``date_from`` inclusive, ``date_to``
        exclusive); at most ``limit`` rows, starting after the row ``after`` (a row's :attr:`HistoryRow.cursor`)."""
        parts: list[tuple[str, list]] = []
        like = f"%{text}%" if text else None
        limit = int(limit)
        for k, spec in _KINDS.items():
            if (kind and k != kind) or (verdict and k != "comparison"):
                continue
            sql, args = spec.select, []
            if verdict in _SCREEN_SIDES:
                sql += f" AND c.verdict {_SCREEN_SIDES[verdict]} COALESCE(c.left_side, 'a') AND c.verdict IN ('a', 'b')"
            elif verdict:
                sql += " AND c.verdict = ?"
                args.append(verdict)
            if like:
                sql += f" AND (p.title LIKE ? OR {spec.text} LIKE ?)"
                args += [like, like]
            if tag:
                sql += " AND EXISTS (SELECT 1 FROM prompt_tag t WHERE t.prompt_id = p.id AND t.tag = ?)"
                args.append(tag)
            if date_from:
                sql += f" AND {spec.when} >= ?"
                args.append(date_from)
            if date_to:
                sql += f" AND {spec.when} < ?"
                args.append(date_to)
            conditions = [("1", [])] if after is None else _after(k, spec, after)
            for cond, cond_args in conditions:
                # Limited on its own, newest first, read from the time index: the union never sorts a whole table.
                parts.append((f"SELECT * FROM ({sql} AND {cond} ORDER BY {spec.when} DESC, {spec.key} DESC LIMIT {limit})",
                               args + cond_args))
        if not parts:
            return []
        sql = " UNION ALL ".join(p for p, _ in parts) + f" ORDER BY at DESC, kind DESC, id DESC LIMIT {limit}"
        args = [a for _, ar in parts for a in ar]
        return [_row(r) for r in self.conn.execute(sql, args)]

    def history_item(self, kind: str, item_id: int) -> HistoryRow | None:
        """The History line of one item as it is now (None when it is gone, or a comparison not judged)."""
        spec = _KINDS[kind]
        row = self.conn.execute(f"{spec.select} AND {spec.key} = ?", (item_id,)).fetchone()
        return _row(row) if row else None


def _row(r) -> HistoryRow:
    return HistoryRow(r[0], r[1], r[2], r[3], r[4], r[5] or "", bool(r[6]), verdict=r[7], strength=r[8],
                      left_side=r[9], retest=bool(r[10]), note=r[11])
