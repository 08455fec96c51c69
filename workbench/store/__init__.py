"""The project file: one SQLite database per project (WAL, foreign keys on), and every operation on it. The store is
the only part of the app that speaks SQL: the core, the engine and the window call named methods of
:class:`Project` (``from workbench.store import Project``).

One module per area, each owning its tables' queries:

- ``connection``: opening (damaged and read-only files included), creating and migrating, transactions, WAL
  checkpoints; ``health``: integrity, counters, snapshot hashes, consistent copies;
- ``prompts``, ``responses``, ``comparisons`` (the queue, retests, undo and retraction), ``rankings``,
  ``demonstrations`` (and the Write queue), ``flags``, ``guidelines`` (and meta);
- ``snapshots``, ``training_rows`` (what training data is selected from and read back out of a snapshot),
  ``runs`` (metrics, checkpoints), ``stats`` (counters and the Dashboard's aggregates), ``history``;
- ``exchange_rows`` and ``bulk``: the rows the project exchange and the bulk importers read and write;
- ``records``: the plain records handed out; ``project``: the facade that composes the areas.

Every public write is one short transaction, committed before the call returns, so a crash loses nothing the
user saw acknowledged. Queries the window runs on each key press (``next_pending``) are served by partial indexes
so they stay fast on a million comparisons. sqlite-utils gives table introspection (``project.db``); the queries
are plain SQL on one connection because each is one statement whose plan we want to control.
"""

from __future__ import annotations

from .connection import DEFAULT_GUIDELINE, ProjectFile, application_id, copy_project, is_project_file
from .history import HISTORY_KINDS
from .project import Project
from .records import Comparison, Demonstration, Flag, HistoryRow, Prompt, Response, Undone, check_choice, now_iso

__all__ = [
    "DEFAULT_GUIDELINE", "HISTORY_KINDS", "application_id", "Comparison", "Demonstration", "Flag", "HistoryRow", "Project", "ProjectFile",
    "Prompt", "Response", "Undone", "check_choice", "copy_project", "is_project_file", "now_iso",
]
