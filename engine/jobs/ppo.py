"""The ``ppo`` stage: see :mod:`engine.ppo.job`."""

from engine.ppo.job import run_job as run  # noqa: F401
