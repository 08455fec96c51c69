"""The History page's query: every judgment, ranking, demonstration and flag in one list, newest first, filtered by
kind, text, verdict, tag and date. Each kind is limited on its own before the union, so the list never sorts a
whole table."""

from __future__ import annotations

from .connection import ProjectFile
from .records import HistoryRow

HISTORY_KINDS = ("comparison", "ranking", "demonstration", "flag")


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
        limit: int = 500,
    ) -> list[HistoryRow]:
        """Every judgment, ranking, demonstration and flag, newest first, filtered by kind, text (in the prompt's
        title or the item), verdict (comparisons only), tag and date (``date_from`` inclusive, ``date_to``
        exclusive); at most ``limit`` rows."""
        parts: list[tuple[str, list]] = []
        like = f"%{text}%" if text else None
        # Each select yields: kind, id, when, prompt_id, title, detail, retracted
        selects = {
            "comparison": (
                "SELECT 'comparison', c.id, c.judged_at, c.prompt_id, p.title, "
                "c.verdict || COALESCE(' · ' || c.strength, '') || CASE WHEN c.retest_of IS NOT NULL THEN ' · retest' ELSE '' END"
                " || COALESCE(' · note: ' || c.note, ''), c.retracted_at IS NOT NULL "
                "FROM comparison c JOIN prompt p ON p.id = c.prompt_id WHERE c.verdict IS NOT NULL",
                "c.judged_at", "c.note",
            ),
            "ranking": (
                "SELECT 'ranking', k.id, k.judged_at, k.prompt_id, p.title, "
                "(SELECT group_concat(n, ' ') FROM (SELECT e.response_id || '→' || e.rank AS n FROM ranking_entry e WHERE e.ranking_id = k.id ORDER BY e.rank)),"
                " k.retracted_at IS NOT NULL FROM ranking k JOIN prompt p ON p.id = k.prompt_id WHERE 1",
                "k.judged_at", "k.note",
            ),
            "demonstration": (
                "SELECT 'demonstration', d.id, d.created_at, d.prompt_id, p.title, substr(r.content, 1, 120), d.retracted_at IS NOT NULL "
                "FROM demonstration d JOIN prompt p ON p.id = d.prompt_id JOIN response r ON r.id = d.response_id WHERE 1",
                "d.created_at", "r.content",
            ),
            "flag": (
                "SELECT 'flag', f.id, f.created_at, f.prompt_id, p.title, "
                "f.category || ' · ' || COALESCE(f.severity, 'absent') || CASE WHEN f.response_id IS NULL THEN ' · on the prompt' ELSE ' · response ' || f.response_id END,"
                " f.retracted_at IS NOT NULL FROM safety_flag f JOIN prompt p ON p.id = f.prompt_id WHERE 1",
                "f.created_at", "f.note",
            ),
        }
        for k, (sql, when_col, text_col) in selects.items():
            if kind and k != kind:
                continue
            if verdict and k != "comparison":
                continue
            args: list = []
            if verdict:
                sql += " AND c.verdict = ?"
                args.append(verdict)
            if like:
                sql += f" AND (p.title LIKE ? OR {text_col} LIKE ?)"
                args += [like, like]
            if tag:
                sql += " AND EXISTS (SELECT 1 FROM prompt_tag t WHERE t.prompt_id = p.id AND t.tag = ?)"
                args.append(tag)
            if date_from:
                sql += f" AND {when_col} >= ?"
                args.append(date_from)
            if date_to:
                sql += f" AND {when_col} < ?"
                args.append(date_to)
            # Each part is limited on its own (newest first) so the union never sorts the whole table.
            parts.append((f"SELECT * FROM ({sql} ORDER BY {when_col} DESC LIMIT {int(limit)})", args))
        if not parts:
            return []
        sql = " UNION ALL ".join(p for p, _ in parts) + f" ORDER BY 3 DESC LIMIT {int(limit)}"
        args = [a for _, ar in parts for a in ar]
        return [HistoryRow(r[0], r[1], r[2] or "", r[3], r[4], r[5] or "", bool(r[6])) for r in self.conn.execute(sql, args)]
