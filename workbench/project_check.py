"""``workbench check``: everything that can be wrong with a project file, and the repairs that are safe to make.

Checks, in order: SQLite's integrity check (pages, indexes) and foreign keys; the counters the window and
``stats`` read (kept by triggers) against real counts; runs whose folder, or whose adapter once the run is done, is
gone from disk; snapshots whose content hash no longer matches the rows they froze. A file SQLite cannot even open
as a project is reported as damaged, with the newest backup.

``repair=True`` rebuilds what can be rebuilt (the counters; runs with a missing folder are marked, so lists and
pickers stop offering them) and says what it could not: damage to the file itself needs a backup restored, and a
snapshot whose rows changed cannot be recomputed (runs trained on it keep their recorded hash).

Qt-free; the store runs every query (:mod:`workbench.store.health`).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .backups import newest_backup
from .errors import DamagedProjectError
from .paths import runs_dir
from .store import Project
from .store.health import describe_counter, describe_snapshot, runs_to_check

TRAINING_STAGES = ("sft", "rm", "safety", "dpo", "ppo")


@dataclass
class Problem:
    kind: str  # file | foreign_key | counter | run | snapshot
    message: str
    repairable: bool = False


@dataclass
class CheckReport:
    path: str
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    not_repaired: list[str] = field(default_factory=list)
    newest_backup: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        if self.ok:
            return [f"{self.path}: ok (integrity, foreign keys, counters, run folders and snapshots checked)"]
        n = len(self.problems)
        out = [f"{self.path}: damaged: {n} problem{'s' if n != 1 else ''} found"]
        out += [f"- {p.message}" for p in self.problems]
        out += [f"repaired: {r}" for r in self.repaired]
        out += [f"not repaired: {r}" for r in self.not_repaired]
        if self.newest_backup and any(p.kind == "file" for p in self.problems):
            out.append(f"the newest backup is {self.newest_backup}: `workbench restore {self.newest_backup} {self.path}`")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "problems": [asdict(p) for p in self.problems],
                "repaired": self.repaired, "not_repaired": self.not_repaired, "newest_backup": self.newest_backup}


def check_project(path: str | os.PathLike[str], *, repair: bool = False) -> CheckReport:
    """Check the project at ``path`` (and repair what can be repaired); raises for a missing file, a file that is
    not a project and a newer schema (nothing to check there), never for damage (that is what it reports)."""
    p = Path(path)
    backup = newest_backup(p)
    report = CheckReport(str(p), newest_backup=str(backup.path) if backup else None)
    try:
        project = Project.open(p, migrate=False, read_only=False if repair else None)
    except DamagedProjectError as e:
        report.problems.append(Problem("file", str(e).split(": ", 1)[1].split(";")[0]))
        if repair:
            report.not_repaired.append("damage to the file itself: restore a backup")
        return report
    with project:
        _check_file(project, report)
        _check_counters(project, report)
        _check_runs(project, report)
        _check_snapshots(project, report)
        if repair:
            _repair(project, report)
    return report


def _check_file(project: Project, report: CheckReport) -> None:
    try:
        lines = project.integrity_problems()
    except sqlite3.DatabaseError as e:  # so damaged that the check itself stops
        lines = [str(e)]
    for line in lines:
        report.problems.append(Problem("file", f"SQLite integrity check: {line}"))
    try:
        for line in project.foreign_key_problems():
            report.problems.append(Problem("foreign_key", f"foreign key: {line}"))
    except sqlite3.DatabaseError as e:
        report.problems.append(Problem("file", f"the foreign keys could not be checked ({e})"))


def _check_counters(project: Project, report: CheckReport) -> None:
    try:
        wrong = project.counter_mismatches()
    except sqlite3.DatabaseError as e:  # a damaged table can make the recount itself fail: one more finding
        report.problems.append(Problem("file", f"the counters could not be recounted ({e})"))
        return
    report.problems += [Problem("counter", describe_counter(m), repairable=True) for m in wrong]


def _check_runs(project: Project, report: CheckReport) -> None:
    for run in runs_to_check(project.runs()):
        folder = Path(run["output_dir"]) if run.get("output_dir") else runs_dir(project.path) / str(run["id"])
        if run["status"] == "pending" and not folder.exists():
            continue  # created, never started: no folder yet
        if not folder.is_dir():
            report.problems.append(Problem("run", f"run {run['id']} ({run['stage']}, {run['status']}): its folder "
                                                  f"{folder} is missing", repairable=True))
        elif (run["stage"] in TRAINING_STAGES and run["status"] == "done"
              and not (folder / "adapter" / "adapter_config.json").is_file()):
            report.problems.append(Problem("run", f"run {run['id']} ({run['stage']}, done): its adapter "
                                                  f"{folder / 'adapter'} is missing", repairable=True))


def _check_snapshots(project: Project, report: CheckReport) -> None:
    try:
        wrong = project.snapshot_mismatches()
    except sqlite3.DatabaseError as e:
        report.problems.append(Problem("file", f"the snapshots could not be rehashed ({e})"))
        return
    report.problems += [Problem("snapshot", describe_snapshot(m)) for m in wrong]


def _repair(project: Project, report: CheckReport) -> None:
    if any(p.kind == "counter" for p in report.problems):
        n = project.rebuild_counters()
        report.repaired.append(f"{n} counter{'s' if n != 1 else ''} recounted from the rows")
    for problem in [p for p in report.problems if p.kind == "run"]:
        run_id = int(problem.message.split()[1])
        project.mark_run_missing(run_id, problem.message.split(": ", 1)[1])
        report.repaired.append(f"run {run_id} marked as missing its files")
    kinds = [p.kind for p in report.problems]
    if "file" in kinds:
        report.not_repaired.append(f"damage to the file itself ({kinds.count('file')} finding(s) above): restore a "
                                   "backup")
    if "foreign_key" in kinds:
        report.not_repaired.append(f"{kinds.count('foreign_key')} row(s) pointing at missing rows: restore a backup, "
                                   "or export the project (--format project) and import it into a new one")
    for problem in report.problems:
        if problem.kind == "snapshot":
            report.not_repaired.append(f"{problem.message.split(' no longer')[0]}: the rows it froze cannot be "
                                       "brought back")
