"""``python -m engine.worker RUN_DIR [--resume]``: run one job from a run folder and stream its events.

The run folder (made by ``workbench.jobs.client.JobClient``) holds ``job.json`` (stage, run id, project file) and
``config.yaml``. The worker lowers its priority (nice 10, or ``$RLHF_WORKBENCH_WORKER_NICE``) and leaves one core free, listens for commands on stdin (and
treats SIGTERM as cancel), looks the stage's job function up in :mod:`engine.jobs`, and turns the outcome into a
``done`` event or an ``error`` event with one clear message, recording the run's status in the project file.
It also runs under ``accelerate launch`` (every process runs the job; the main one talks).

Exit codes: 0 done or cancelled, 1 failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from workbench.configs import config_class
from workbench.errors import WorkbenchError
from workbench.jobs.protocol import CONFIG_FILE, JOB_FILE, Command, Event, EventType, parse_command
from workbench.store import now_iso

from .chat_templates import run_chat_template
from .jobs import JobError, JobResult, get_job
from .jobs.context import JobContext, env_rank


def worker_nice() -> int:
    """How far the worker lowers itself: 10, or ``$RLHF_WORKBENCH_WORKER_NICE`` (a benchmark or a busy test machine
    may want the worker level with its other work; negative values need root)."""
    try:
        return int(os.environ.get("RLHF_WORKBENCH_WORKER_NICE", "10"))
    except ValueError:
        return 10


def _lower_priority(num_threads: int | None, world_size: int = 1) -> int:
    """Lower the worker's priority and set torch's thread count (the config's, else the cores but one, shared by
    the processes of a distributed run); returns the thread count."""
    nice = worker_nice()
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        pass
    # The worker runs in its own session, and with Linux's autogroup scheduling (on by default) a session's nice
    # value, not the process's, decides its share against the window's session: lower both.
    try:
        with open("/proc/self/autogroup", "w", encoding="ascii") as f:
            f.write(str(nice))
    except OSError:
        pass
    import torch

    cores = os.cpu_count() or 1
    # Leave one core to the window; several processes share the rest.
    torch.set_num_threads(num_threads or max(1, (cores - 1) // max(1, world_size)))
    return torch.get_num_threads()


def _listen(ctx: JobContext, stream: Any) -> None:
    """Read commands from stdin until it closes; EOF (the client went away) is not a cancel. ``cancel`` sets the
    job's cancel flag; any other command goes on ``ctx.commands`` for the job."""
    for line in stream:
        parsed = parse_command(line if isinstance(line, str) else line.decode("utf-8", "replace"))
        if parsed is None:
            continue
        name, _args = parsed
        if name == Command.CANCEL.value:
            ctx.log("cancel requested; stopping after this step")
            ctx.request_cancel()
        else:
            # Everything else is for the job to read (ctx.commands); jobs that take none simply never look.
            ctx.commands.put((name, _args))


def _classify(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for an exception the job did not turn into a JobError itself."""
    import torch

    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in lowered or "can't allocate memory" in lowered:
        return "oom", ("ran out of memory; lower batch_size or max_length, turn on gradient_checkpointing, "
                       f"or use quantize: 4bit ({type(exc).__name__}: {text.splitlines()[0][:200] if text else ''})")
    return "crash", f"{type(exc).__name__}: {text}"


def run(run_dir: Path, *, resume: bool = False, stdout: Any = None, own_process: bool = True) -> int:
    """Run the job of ``run_dir``; returns the exit code. ``own_process=False`` (tests running a job in-process)
    leaves the caller's priority, thread count and stdin alone."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        return _run(run_dir, resume=resume, stdout=stdout, own_process=own_process)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(run_dir: Path, *, resume: bool, stdout: Any, own_process: bool) -> int:
    rank, world = env_rank()
    job = json.loads((run_dir / JOB_FILE).read_text(encoding="utf-8"))
    stage = job["stage"]
    ctx_project = Path(job["project"]) if job.get("project") else None
    config = config_class(stage).load(run_dir / CONFIG_FILE)
    ctx = JobContext(stage=stage, config=config, run_dir=run_dir, run_id=job.get("run_id"), project_path=ctx_project,
                     resume=resume, rank=rank, world_size=world, stdout=stdout)
    if ctx.is_main and own_process:
        threading.Thread(target=_listen, args=(ctx, sys.stdin), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: ctx.request_cancel())
    threads = _lower_priority(config.num_threads, world) if own_process else None

    started = time.time()
    project = ctx.project()
    if project is not None and ctx.run_id is not None:
        # The process group (the worker's own session, or the accelerate launcher's): what a client signals.
        project.update_run(ctx.run_id, status="running", pid=os.getpgrp(), started_at=now_iso(), error=None)
    ctx.status("running", f"{stage} run {ctx.run_id} started" + (" (resuming)" if resume else ""),
               **({"threads": threads} if threads else {}))
    try:
        with run_chat_template(config) as template:
            if template is not None:
                ctx.log(f"chat template: {template.source}")
            result: JobResult = get_job(stage)(ctx)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an error event
        if isinstance(exc, KeyboardInterrupt):
            kind, message = "cancel", "interrupted"
        elif isinstance(exc, JobError):
            kind, message = exc.kind, exc.message
        elif isinstance(exc, WorkbenchError):
            kind, message = "input", str(exc)
        else:
            kind, message = _classify(exc)
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        ctx.emit(Event(EventType.ERROR, {"message": message, "kind": kind, "traceback": tb if kind == "crash" else None}))
        if project is not None and ctx.run_id is not None:
            project.update_run(ctx.run_id, status="failed", error=message, finished_at=now_iso())
        ctx.close()
        return 1

    from .devices import peak_mem_mb

    summary = {
        "run_id": ctx.run_id,
        "status": result.status,
        "output": result.output,
        "wall_s": round(time.time() - started, 2),
        "peak_mem_mb": round(peak_mem_mb(), 1),
        **result.summary,
    }
    if project is not None and ctx.run_id is not None:
        project.update_run(ctx.run_id, status=result.status, final_metrics=result.final_metrics, finished_at=now_iso())
    if result.status == "done":
        ctx.emit(Event(EventType.DONE, {"output": result.output, "final_metrics": result.final_metrics, "summary": summary}))
    else:
        ctx.status(result.status, "cancelled; the last checkpoint can be resumed", summary=summary,
                   final_metrics=result.final_metrics)
    ctx.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.worker", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder holding job.json and config.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run folder")
    args = parser.parse_args(argv)
    return run(args.run_dir.resolve(), resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
