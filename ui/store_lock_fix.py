"""A stop-gap for a locking bug of ``workbench.store.is_project_file`` that breaks the window while a run goes.

The store checks a file's header with Python's ``open()``/``close()``. On POSIX, closing any descriptor of a file
drops every lock the process holds on it, including those of the window's open SQLite connection. The window opens
the project again each time it starts, resumes or records a run (:class:`workbench.jobs.client.JobClient`), so its
locks vanish; when the worker then closes its connection it finds no other reader, checkpoints and deletes the
WAL index (``-shm``) under the window's feet, and the window's next query fails with "database disk image is
malformed" (or silently misses the worker's writes). Reproduced here with two processes and a plain
``Project.open`` in between.

:func:`apply` replaces the check by one made through SQLite itself (``PRAGMA application_id`` on a read-only
connection, whose descriptor SQLite keeps open until no connection of the process needs it), which reads the same
header and keeps the locks. It is applied when the engine client is imported, i.e. only in the window. Remove this
module once ``workbench/store.py`` checks the header that way.
"""

from __future__ import annotations

import os
import sqlite3

import workbench.store
from workbench.schema import APPLICATION_ID

_applied = False


def is_project_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an SQLite file carrying our application id, read without a raw open() of it."""
    if not os.path.isfile(path):
        return False
    try:
        conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
        try:
            return conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def apply() -> None:
    global _applied
    if not _applied:
        workbench.store.is_project_file = is_project_file
        _applied = True
