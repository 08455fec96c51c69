"""The ``dpo`` stage: see :mod:`engine.dpo`."""

from engine.dpo import run_job as run  # noqa: F401
