"""The ``safety`` stage: a safety classifier over the flag categories (body in :mod:`engine.safety_classifier`)."""

from __future__ import annotations

from engine.safety_classifier import run_safety as run

__all__ = ["run"]
