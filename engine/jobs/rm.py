"""The ``rm`` stage: a reward model (body in :mod:`engine.rm_job`)."""

from __future__ import annotations

from engine.rm_job import run_rm as run

__all__ = ["run"]
