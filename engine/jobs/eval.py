"""The ``eval`` stage: a reward model's pairwise accuracy on a snapshot (body in :mod:`engine.rm_job`)."""

from __future__ import annotations

from engine.rm_job import run_eval as run

__all__ = ["run"]
