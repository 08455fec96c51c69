"""Training and job runs (stage, config, snapshot, status, output folder), the metrics they log step by step, and
their checkpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import WorkbenchError
from ..messages import canonical_json
from .connection import ProjectFile
from .records import check_choice, now_iso

RUN_STATES = ("pending", "running", "done", "failed", "cancelled")


class RunStore(ProjectFile):
    def create_run(
        self,
        stage: str,
        config: Mapping[str, Any],
        *,
        name: str = "",
        base_model: str | None = None,
        adapter_from: str | None = None,
        snapshot_id: int | None = None,
        output_dir: str | None = None,
        parent_run: int | None = None,
    ) -> int:
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO run (stage, name, base_model, adapter_from, snapshot_id, config, output_dir, parent_run, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (stage, name, base_model, adapter_from, snapshot_id, canonical_json(dict(config)), output_dir, parent_run, now_iso()),
            )
        return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields: Any) -> None:
        allowed = {"status", "pid", "error", "final_metrics", "output_dir", "started_at", "finished_at", "snapshot_id", "name", "config"}
        bad = set(fields) - allowed
        if bad:
            raise WorkbenchError(f"cannot update run fields {sorted(bad)}")
        if "status" in fields:
            check_choice(fields["status"], RUN_STATES, "status")
        values = {k: canonical_json(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
        with self.transaction():
            self.conn.execute(
                f"UPDATE run SET {', '.join(f'{k} = ?' for k in values)} WHERE id = ?", [*values.values(), run_id]
            )

    def get_run(self, run_id: int) -> dict[str, Any]:
        runs = self._runs_where("id = ?", [run_id])
        if not runs:
            raise WorkbenchError(f"no run with id {run_id}")
        return runs[0]

    def running_runs(self) -> list[tuple[int, int | None]]:
        """(run id, worker pid) of the runs recorded as running."""
        return [(int(r[0]), r[1]) for r in self.conn.execute("SELECT id, pid FROM run WHERE status = 'running'")]

    def runs(self) -> list[dict[str, Any]]:
        return self._runs_where("1", [])

    def runs_of_stage(self, stage: str, *, statuses: Sequence[str] = (), newest_first: bool = False) -> list[dict[str, Any]]:
        """The runs of one stage (with one of ``statuses``, when given), oldest first unless ``newest_first``."""
        where, args = "stage = ?", [stage]
        if statuses:
            where += f" AND status IN ({','.join('?' * len(statuses))})"
            args += list(statuses)
        return self._runs_where(where, args, newest_first=newest_first)

    def _runs_where(self, where: str, args: list[Any], *, newest_first: bool = False) -> list[dict[str, Any]]:
        cur = self.conn.execute(f"SELECT * FROM run WHERE {where} ORDER BY id{' DESC' if newest_first else ''}", args)
        names = [d[0] for d in cur.description]
        out = []
        for row in cur:
            run = dict(zip(names, row))
            for k in ("config", "final_metrics"):
                run[k] = json.loads(run[k]) if run[k] else ({} if k == "config" else None)
            out.append(run)
        return out

    def log_metrics(self, run_id: int, step: int, metrics: Mapping[str, float], wall_time: float | None = None) -> None:
        t = time.time() if wall_time is None else wall_time
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO metric VALUES (?, ?, ?, ?, ?)",
                [(run_id, step, k, float(v) if v is not None else None, t) for k, v in metrics.items()],
            )

    def metrics(self, run_id: int, key: str | None = None) -> list[tuple[int, str, float]]:
        if key:
            rows = self.conn.execute("SELECT step, key, value FROM metric WHERE run_id = ? AND key = ? ORDER BY step", (run_id, key))
        else:
            rows = self.conn.execute("SELECT step, key, value FROM metric WHERE run_id = ? ORDER BY key, step", (run_id,))
        return [tuple(r) for r in rows]

    def add_checkpoint(self, run_id: int, step: int, path: str, *, metrics: Mapping[str, float] | None = None, is_best: bool = False) -> int:
        with self.transaction():
            if is_best:
                self.conn.execute("UPDATE checkpoint SET is_best = 0 WHERE run_id = ?", (run_id,))
            cur = self.conn.execute(
                "INSERT INTO checkpoint (run_id, step, path, is_best, metrics, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, step, path, int(is_best), canonical_json(dict(metrics or {})), now_iso()),
            )
        return int(cur.lastrowid)

    def checkpoints(self, run_id: int) -> list[dict[str, Any]]:
        """A run's checkpoint rows (id, step, path, is_best, metrics, created_at), by step."""
        return [
            {"id": r[0], "step": r[1], "path": r[2], "is_best": bool(r[3]), "metrics": json.loads(r[4]) if r[4] else {},
             "created_at": r[5]}
            for r in self.conn.execute(
                "SELECT id, step, path, is_best, metrics, created_at FROM checkpoint WHERE run_id = ? ORDER BY step, id",
                (run_id,),
            )
        ]

    def forget_missing_checkpoints(self, run_id: int) -> int:
        """Delete the rows of ``run_id``'s checkpoints whose folder is gone (pruned); returns how many."""
        rows = self.conn.execute("SELECT id, path FROM checkpoint WHERE run_id = ?", (run_id,)).fetchall()
        gone = [(r[0],) for r in rows if not Path(r[1]).exists()]
        if gone:
            with self.transaction():
                self.conn.executemany("DELETE FROM checkpoint WHERE id = ?", gone)
        return len(gone)

    def delete_run(self, run_id: int) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM run WHERE id = ?", (run_id,))

    def metric_values(self, run_id: int, key: str) -> list[tuple[int, float | None]]:
        """(step, value) of one metric of a run in the order written (a later row for a step supersedes an
        earlier one when read into a dict)."""
        return [tuple(r) for r in self.conn.execute(
            "SELECT step, value FROM metric WHERE run_id = ? AND key = ? ORDER BY rowid", (run_id, key)
        )]

    def metric_at_steps(self, run_id: int, key: str, steps: Sequence[int]) -> dict[int, float]:
        """Step → value of one metric of a run at the given steps (the last row written for a step wins; steps
        without a value are left out). A seek per step on the metric index, whatever the run's size."""
        out: dict[int, float] = {}
        for step in dict.fromkeys(int(s) for s in steps):
            row = self.conn.execute(
                "SELECT value FROM metric WHERE run_id = ? AND key = ? AND step = ? ORDER BY rowid DESC LIMIT 1",
                (run_id, key, step),
            ).fetchone()
            if row is not None and row[0] is not None:
                out[step] = float(row[0])
        return out

    def newest_run_with_metric(self, stage: str, key: str, *, statuses: Sequence[str] = ("done", "cancelled")) -> int | None:
        """The newest run of ``stage`` (with one of ``statuses``) that logged metric ``key``, or None."""
        row = self.conn.execute(
            f"SELECT r.id FROM run r WHERE r.stage = ? AND r.status IN ({','.join('?' * len(statuses))})"
            " AND EXISTS (SELECT 1 FROM metric m WHERE m.run_id = r.id AND m.key = ?) ORDER BY r.id DESC LIMIT 1",
            [stage, *statuses, key]).fetchone()
        return int(row[0]) if row else None
