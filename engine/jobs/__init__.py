"""The job registry and what a job gets to talk to the world: a :class:`JobContext`.

A job is a function ``run(ctx: JobContext) -> JobResult`` for one stage (``sft``, ``rm``, ``safety``, ``ppo``,
``dpo``, ``generate``, ``eval``). The worker (:mod:`engine.worker`) finds it with :func:`get_job`, which looks in
this order:

1. functions registered with ``@register("stage")`` (for jobs defined in any imported module);
2. :data:`BUILTIN_JOBS`, a map of stage → ``"module:function"`` imported on demand;
3. by convention, a module ``engine.jobs.<stage>`` with a function ``run``.

So to add a stage, write ``engine/jobs/<stage>.py`` with ``def run(ctx: JobContext) -> JobResult`` (or put the
trainer elsewhere and make that module a two-line shim calling it). Inside the job:

- ``ctx.config`` is the stage's config dataclass (``workbench.configs``), ``ctx.run_dir`` the run folder,
  ``ctx.project()`` the project file (main process only), ``ctx.resume`` whether to continue from the last
  checkpoint (``engine.checkpoints.latest_checkpoint(ctx.checkpoint_dir)``);
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


_REGISTRY: dict[str, JobFn] = {}

BUILTIN_JOBS: dict[str, str] = {
    "sft": "engine.sft:run_job",
    "export": "engine.export.job:run_job",
}


def register(stage: str) -> Callable[[JobFn], JobFn]:
    def deco(fn: JobFn) -> JobFn:
        _REGISTRY[stage] = fn
        return fn

    return deco


def get_job(stage: str) -> JobFn:
    if stage in _REGISTRY:
        return _REGISTRY[stage]
    target = BUILTIN_JOBS.get(stage)
    if target:
        module, fn = target.split(":")
        return getattr(importlib.import_module(module), fn)
    try:
        module = importlib.import_module(f"engine.jobs.{stage}")
    except ModuleNotFoundError as e:
        if e.name != f"engine.jobs.{stage}":
            raise
        raise JobError(f"no job for stage {stage!r} in this version of the engine") from None
    return getattr(module, "run")
