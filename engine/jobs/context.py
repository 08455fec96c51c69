"""JobContext: a running job's link to its run folder, the event stream, the project file and cancellation.

Events go to stdout (the pipe the client reads) and to ``RUN_DIR/events.log``; stdout writes that fail because
the client went away are dropped silently (the run goes on; the log still has everything). Only the main process
of a distributed run emits; the others' calls are no-ops except :meth:`should_stop`, which all processes call
together so they stop at the same step.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path
from typing import IO, Any

from workbench.configs import ModelConfig
from workbench.jobs import protocol
from workbench.jobs.protocol import EVENTS_LOG, Event
from workbench.store import Project


class JobContext:
    def __init__(
        self,
        *,
        stage: str,
        config: ModelConfig,
        run_dir: Path,
        run_id: int | None,
        project_path: Path | None,
        resume: bool = False,
        rank: int = 0,
        world_size: int = 1,
        stdout: IO[str] | None = None,
    ):
        self.stage = stage
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.project_path = project_path
        self.resume = resume
        self.rank = rank
        self.world_size = world_size
        self.is_main = rank == 0
        self.cancel_event = threading.Event()
        # Commands other than cancel, as (name, args), for long-lived jobs (the Playground's chat turns).
        self.commands: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stdout = stdout if stdout is not None else sys.stdout
        self._stdout_ok = True
        self._log = open(self.run_dir / EVENTS_LOG, "a", encoding="utf-8") if self.is_main else None
        self._lock = threading.Lock()
        self._project: Project | None = None

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def output_dir(self) -> Path:
        return self.run_dir / "adapter"

    # ------------------------------------------------------------------ project
    def project(self) -> Project | None:
        """The project file, opened on first use (main process only; None elsewhere or without a project)."""
        if not self.is_main or self.project_path is None:
            return None
        if self._project is None:
            self._project = Project.open(self.project_path, migrate=False)
        return self._project

    def close(self) -> None:
        if self._project is not None:
            self._project.close()
            self._project = None
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------------ events
    def emit(self, event: Event) -> None:
        if not self.is_main:
            return
        line = event.to_json()
        with self._lock:
            if self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()
            if self._stdout_ok:
                try:
                    self._stdout.write(line + "\n")
                    self._stdout.flush()
                except (BrokenPipeError, OSError, ValueError):
                    # The client is gone; the run outlives it and the log keeps the events for a re-attach.
                    self._stdout_ok = False

    def status(self, state: str, message: str = "", **extra: Any) -> None:
        self.emit(protocol.status(state, message, **extra))

    def progress(self, step: int, total: int, **data: Any) -> None:
        self.emit(protocol.progress(step, total, **data))

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """Stream metrics and store them in the project (so charts of old runs redraw after a restart)."""
        if not self.is_main:
            return
        values = {k: float(v) for k, v in values.items()}
        self.emit(protocol.metrics(step, values))
        project = self.project()
        if project is not None and self.run_id is not None:
            project.log_metrics(self.run_id, step, values)

    def log(self, message: str, level: str = "info", step: int | None = None) -> None:
        self.emit(protocol.log(message, level, step))

    def checkpoint(self, step: int, path: Path, metrics: dict[str, float] | None = None, best: bool = False) -> None:
        if not self.is_main:
            return
        self.emit(Event(protocol.EventType.CHECKPOINT, {"path": str(path), "best": best, "metrics": metrics or {}}, step))
        project = self.project()
        if project is not None and self.run_id is not None:
            project.add_checkpoint(self.run_id, step, str(path), metrics=metrics, is_best=best)
            # jobs prune old checkpoint folders on disk; their rows go with them
            project.forget_missing_checkpoints(self.run_id)

    # ------------------------------------------------------------------ cancellation
    def request_cancel(self) -> None:
        self.cancel_event.set()

    def should_stop(self, accelerator: Any = None) -> bool:
        """Whether to stop now. With several processes, every process must call this at the same step: the main
        process's cancel flag is shared so all stop together."""
        flag = self.cancel_event.is_set()
        if accelerator is not None and accelerator.num_processes > 1:
            import torch

            t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
            flag = bool(accelerator.reduce(t, reduction="sum").item() > 0)
        return flag


def env_rank() -> tuple[int, int]:
    """(rank, world size) from the variables ``accelerate launch`` / torchrun set; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
