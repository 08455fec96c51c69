"""The job registry and what a job gets to talk to the world: a :class:`~engine.jobs.context.JobContext`.

A job is a function ``run(ctx: JobContext) -> JobResult`` for one stage. :data:`JOBS` is the one table of them,
stage → ``"module:function"``, imported on demand; the worker (:mod:`engine.worker`) finds a stage's job with
:func:`get_job`. The training stages live in :mod:`engine.trainers` (one skeleton, a module per stage); the other
jobs (generation, the Playground, a reward model's accuracy, scoring) here. To add a stage, add its row.

Inside a job:

- ``ctx.config`` is the stage's config dataclass (``workbench.configs``), ``ctx.run_dir`` the run folder,
  ``ctx.project()`` the project file (main process only), ``ctx.resume`` whether to continue from the last
  checkpoint;
- report with ``ctx.progress(step, total, ...)``, ``ctx.metrics(step, {"train/loss": ...})`` (also written to the
  project), ``ctx.log(msg)``, ``ctx.checkpoint(step, path, metrics, best)``;
- call ``ctx.should_stop()`` once per step; when True, save a checkpoint and return
  ``JobResult(status="cancelled", ...)``;
- raise :class:`JobError` (message for the user, kind input | oom | nan) for bad input; the worker turns it and any
  other exception into an ``error`` event and marks the run failed.
Under ``accelerate launch`` every process runs the job; only the main process emits events and writes the project.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import JobContext

JobFn = Callable[["JobContext"], "JobResult"]


class JobError(Exception):
    """A failure to show the user as is: bad input (missing model, too little data), out of memory, NaN loss."""

    def __init__(self, message: str, kind: str = "input"):
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass
class JobResult:
    """What a finished job reports: its output folder, final metrics, and throughput figures for the summary."""

    status: str = "done"  # done | cancelled
    output: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


JOBS: dict[str, str] = {
    "sft": "engine.trainers.sft:run",
    "rm": "engine.trainers.reward:run",
    "safety": "engine.trainers.safety:run",
    "dpo": "engine.trainers.dpo:run",
    "ppo": "engine.trainers.ppo.job:run",
    "generate": "engine.jobs.generate:run",
    "playground": "engine.jobs.playground:run",
    "eval": "engine.jobs.eval:run",
    "score": "engine.jobs.score:run",
    "export": "engine.export.job:run",
}


def get_job(stage: str) -> JobFn:
    """The job function of ``stage`` (a :class:`JobError` naming it when there is none)."""
    try:
        module, function = JOBS[stage].split(":")
    except KeyError:
        raise JobError(f"no job for stage {stage!r} in this version of the engine "
                       f"(there are {', '.join(JOBS)})") from None
    return getattr(importlib.import_module(module), function)
