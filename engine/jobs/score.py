"""The ``score`` stage: reward-model scores of evaluation responses, the automatic win rate (body in
:mod:`engine.scoring`)."""

from __future__ import annotations

from engine.scoring import run_job as run

__all__ = ["run"]
