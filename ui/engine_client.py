"""The window's engine thread: a QThread around the Qt-free job client (:mod:`workbench.jobs.client`).

One :class:`EngineRun` is one run seen from the window. Its thread starts the worker (``python -m engine.worker``
through :class:`~workbench.jobs.client.JobClient`), resumes a stopped run, or re-attaches to a run left going in the
background; it iterates the client's event stream and re-emits each event as Qt signals, so the pages never block
on a pipe and the window never imports torch. Commands go the other way on the worker's stdin (cancel; for a
long-lived generation job such as the Playground's, the next prompt).

Whatever way the worker ends — done, an error event, a Python exception, a death by signal (on CPU an
out-of-memory kill is a SIGKILL) — :attr:`EngineRun.finished_run` carries an :class:`Outcome` with the reason and
the tail of the run's logs, and the window goes on working.

The client's stream is interruptible (:meth:`~workbench.jobs.client.RunHandle.detach`), so :meth:`EngineRun.detach`
lets a run go on in the background while the window closes, and :meth:`EngineRun.stop` ends the thread in a test's
teardown.

A :class:`PipelineRun` does the same for a Qt-free pipeline of jobs from the core (the blind evaluation round of
:mod:`workbench.eval_round`): its thread runs the pipeline and re-emits what the pipeline reports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from workbench.configs import ModelConfig
from workbench.errors import WorkbenchError
from workbench.eval_round import ModelAnswers, PipelineListener
from workbench.jobs.client import JobClient, Outcome, RunHandle, log_tail
from workbench.jobs.protocol import Event, EventType

_POLL_S = 0.1


class _JobThread(QThread):
    """What the window's job threads share: ``kill`` and ``detach`` of their own, and a teardown that uses them."""

    def kill(self) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        raise NotImplementedError

    def stop(self, timeout_ms: int = 30000) -> bool:
        """For teardown: kill the worker if it still runs, end the thread, wait for it. True when it ended."""
        self.kill()
        ok = self.wait(timeout_ms)
        if not ok:
            self.detach()
            ok = self.wait(5000)
        return ok


class EngineRun(_JobThread):
    """One run driven from the window. Build with :meth:`start_run`, :meth:`resume_run` or :meth:`attach_run`,
    then call :meth:`start` (QThread's) after connecting the signals."""

    started_run = Signal(int, str)          # run id, run folder
    event = Signal(object)                  # every Event, as read
    progress = Signal(dict)                 # {"step", "total", "eta_s", "tokens_per_s", ...}
    metrics = Signal(int, dict)             # step, {key: value}
    log = Signal(str, str)                  # level, message
    finished_run = Signal(object)           # Outcome

    def __init__(self, project_path: Path, *, mode: str, stage: str | None = None, config: ModelConfig | None = None,
                 run_id: int | None = None, parent: QObject | None = None, python: str | None = None):
        super().__init__(parent)
        self.project_path = Path(project_path)
        self.mode = mode
        self.stage = stage
        self.config = config
        self.run_id = run_id
        self.run_dir: Path | None = None
        self.handle: RunHandle | None = None
        self.outcome: Outcome | None = None
        self.client = JobClient(self.project_path, python=python)
        self._detached = False
        self._cancel_pending: float | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def start_run(cls, project_path: Path, stage: str, config: ModelConfig, parent: QObject | None = None,
                  **kw: Any) -> "EngineRun":
        return cls(project_path, mode="start", stage=stage, config=config, parent=parent, **kw)

    @classmethod
    def resume_run(cls, project_path: Path, run_id: int, parent: QObject | None = None, **kw: Any) -> "EngineRun":
        return cls(project_path, mode="resume", run_id=run_id, parent=parent, **kw)

    @classmethod
    def attach_run(cls, project_path: Path, run_id: int, parent: QObject | None = None, **kw: Any) -> "EngineRun":
        return cls(project_path, mode="attach", run_id=run_id, parent=parent, **kw)

    # ------------------------------------------------------------------ commands (any thread)
    def cancel(self, timeout_s: float = 60.0) -> None:
        """Ask the worker to stop (it checkpoints first); a hard kill follows after ``timeout_s``."""
        with self._lock:
            if self.handle is None:
                self._cancel_pending = timeout_s
                return
        self.handle.cancel(timeout_s)

    def kill(self) -> None:
        """Kill the worker and its process group at once (recorded as a failure by signal)."""
        if self.handle is not None:
            self.handle.kill()

    def send_command(self, command: str, **args: Any) -> bool:
        """Write one command line to the worker's stdin (e.g. the Playground's next prompt)."""
        return self.handle is not None and self.handle.send(command, **args)

    def detach(self) -> None:
        """Stop listening; the worker goes on in the background (a later window re-attaches to it)."""
        with self._lock:
            self._detached = True
            handle = self.handle
        if handle is not None:
            handle.detach()

    @property
    def alive(self) -> bool:
        return self.handle is not None and self.handle.alive

    # ------------------------------------------------------------------ the thread
    def run(self) -> None:  # noqa: D401 - QThread's entry point
        try:
            handle = self._open()
        except (WorkbenchError, OSError) as e:
            self._emit_outcome(Outcome(self.run_id, "failed", error=str(e), log_tail=log_tail(self.run_dir)))
            return
        except Exception as e:  # noqa: BLE001 - a bug must not take the window down
            self._emit_outcome(Outcome(self.run_id, "failed", error=f"{type(e).__name__}: {e}"))
            return
        with self._lock:
            self.handle = handle
            pending = self._cancel_pending
            if self._detached:
                handle.detach()
        self.run_id, self.run_dir = handle.run_id, handle.run_dir
        self.started_run.emit(handle.run_id, str(handle.run_dir))
        if pending is not None:
            handle.cancel(pending)
        try:
            for ev in handle.events(poll_s=_POLL_S):
                self._dispatch(ev)
        except Exception as e:  # noqa: BLE001
            self._emit_outcome(Outcome(handle.run_id, "failed", error=f"{type(e).__name__}: {e}",
                                       log_tail=log_tail(handle.run_dir)))
            return
        self._emit_outcome(handle.outcome())

    def _open(self) -> RunHandle:
        if self.mode == "start":
            assert self.stage is not None and self.config is not None
            return self.client.start(self.stage, self.config)
        if self.mode == "resume":
            assert self.run_id is not None
            return self.client.resume(self.run_id)
        if self.mode == "attach":
            assert self.run_id is not None
            return self.client.attach(self.run_id)
        raise WorkbenchError(f"unknown engine mode {self.mode!r}")

    def _emit_outcome(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.finished_run.emit(outcome)

    def _dispatch(self, ev: Event) -> None:
        self.event.emit(ev)
        if ev.type == EventType.METRICS:
            self.metrics.emit(int(ev.step or 0), dict(ev.data))
        elif ev.type == EventType.PROGRESS:
            self.progress.emit({"step": ev.step, **ev.data})
        elif ev.type == EventType.LOG:
            self.log.emit(str(ev.data.get("level", "info")), str(ev.data.get("message", "")))
        elif ev.type == EventType.ERROR:
            self.log.emit("error", str(ev.data.get("message", "")))


class PipelineRun(_JobThread):
    """A core pipeline of jobs (``work(answers)``, e.g. :func:`workbench.eval_round.run_round`) run off the UI thread;
    what it reports comes out as signals. ``cancel``, ``kill`` and ``detach`` go to the pipeline."""

    job_started = Signal(str, int, str)     # label, run id, run folder
    progress = Signal(str, dict)            # label, {"step", "total", ...}
    log = Signal(str, str)                  # level, message
    job_finished = Signal(str, object)      # label, Outcome
    finished_pipeline = Signal(object)      # what ``work`` returned, or the exception it raised

    def __init__(self, project_path: Path, work: Callable[[ModelAnswers], Any], *,
                 sampling: Mapping[str, Any] | None = None, parent: QObject | None = None, python: str | None = None):
        super().__init__(parent)
        self.work = work
        self.answers = ModelAnswers(project_path, sampling=sampling, listener=_Relay(self), python=python)
        self.result: Any = None

    def cancel(self, timeout_s: float = 60.0) -> None:
        self.answers.cancel(timeout_s)

    def kill(self) -> None:
        self.answers.kill()

    def detach(self) -> None:
        self.answers.detach()

    def run(self) -> None:  # noqa: D401 - QThread's entry point
        try:
            self.result = self.work(self.answers)
        except Exception as e:  # noqa: BLE001 - a bug must not take the window down
            self.result = e
        self.finished_pipeline.emit(self.result)


class _Relay(PipelineListener):
    """Re-emits a pipeline's reports as its :class:`PipelineRun`'s signals."""

    def __init__(self, run: PipelineRun):
        self.run = run

    def job_started(self, label: str, run_id: int, run_dir: Path) -> None:
        self.run.job_started.emit(label, run_id, str(run_dir))

    def event(self, label: str, ev: Event) -> None:
        if ev.type == EventType.PROGRESS:
            self.run.progress.emit(label, {"step": ev.step, **ev.data})
        elif ev.type == EventType.LOG:
            self.run.log.emit(str(ev.data.get("level", "info")), str(ev.data.get("message", "")))
        elif ev.type == EventType.ERROR:
            self.run.log.emit("error", str(ev.data.get("message", "")))

    def job_finished(self, label: str, outcome: Outcome) -> None:
        self.run.job_finished.emit(label, outcome)


class RunManager(QObject):
    """The window's runs of one project: the training run the Train page shows (one at a time: a run takes the
    machine), plus any other jobs pages start (generation, evaluation, the Playground), so closing the project
    or a test's teardown can stop them all. Shared by the pages through :func:`run_manager`."""

    run_started = Signal(int, str)
    progress = Signal(dict)
    metrics = Signal(int, dict)
    log = Signal(str, str)
    run_finished = Signal(object)   # Outcome
    busy_changed = Signal(bool)

    def __init__(self, project_path: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.project_path = Path(project_path)
        self.current: EngineRun | None = None
        self.jobs: list[EngineRun | PipelineRun] = []

    @property
    def busy(self) -> bool:
        return self.current is not None and self.current.isRunning()

    # ------------------------------------------------------------------ the training run
    def start(self, stage: str, config: ModelConfig) -> EngineRun:
        return self._begin(EngineRun.start_run(self.project_path, stage, config, parent=self))

    def resume(self, run_id: int) -> EngineRun:
        return self._begin(EngineRun.resume_run(self.project_path, run_id, parent=self))

    def attach(self, run_id: int) -> EngineRun:
        return self._begin(EngineRun.attach_run(self.project_path, run_id, parent=self))

    def _begin(self, job: EngineRun) -> EngineRun:
        if self.busy:
            raise WorkbenchError(f"run {self.current.run_id} is still going; cancel it or wait for it to finish")
        self.current = job
        # Only the current run speaks for the manager: signals still queued from a run it let go of (detached,
        # replaced) must not reach the pages.
        job.started_run.connect(lambda rid, d, j=job: self.run_started.emit(rid, d) if j is self.current else None)
        job.progress.connect(lambda p, j=job: self.progress.emit(p) if j is self.current else None)
        job.metrics.connect(lambda st, v, j=job: self.metrics.emit(st, v) if j is self.current else None)
        job.log.connect(lambda lv, m, j=job: self.log.emit(lv, m) if j is self.current else None)
        job.finished_run.connect(lambda o, j=job: self._finished(o) if j is self.current else None)
        self.jobs.append(job)
        job.start()
        self.busy_changed.emit(True)
        return job

    def _finished(self, outcome: Outcome) -> None:
        self.run_finished.emit(outcome)
        self.busy_changed.emit(False)

    def cancel(self, timeout_s: float = 60.0) -> None:
        if self.current is not None:
            self.current.cancel(timeout_s)

    # ------------------------------------------------------------------ other jobs
    def job(self, stage: str, config: ModelConfig) -> EngineRun:
        """A side job (generation, evaluation, playground) the caller connects and starts."""
        j = EngineRun.start_run(self.project_path, stage, config, parent=self)
        self.jobs.append(j)
        return j

    def pipeline(self, work: Callable[[ModelAnswers], Any], *, sampling: Mapping[str, Any] | None = None) -> PipelineRun:
        """A pipeline of side jobs (an evaluation round) the caller connects and starts."""
        p = PipelineRun(self.project_path, work, sampling=sampling, parent=self)
        self.jobs.append(p)
        return p

    def live_jobs(self) -> list[EngineRun | PipelineRun]:
        return [j for j in self.jobs if j.isRunning()]

    # ------------------------------------------------------------------ closing
    def detach_all(self) -> None:
        """Let every worker go on in the background and end the threads (the window is closing)."""
        for j in self.jobs:
            j.detach()
        for j in self.jobs:
            j.wait(5000)
        if self.current is not None:
            self.current = None
            self.busy_changed.emit(False)

    def shutdown(self, timeout_ms: int = 30000) -> None:
        """Kill every worker still going and end the threads (tests' teardown; closing with 'cancel')."""
        for j in self.jobs:
            j.kill()
        for j in self.jobs:
            j.stop(timeout_ms)


def run_manager(session: Any) -> RunManager:
    """The RunManager shared by the pages of one open project (kept on the session object)."""
    mgr = getattr(session, "_run_manager", None)
    if mgr is None:
        mgr = RunManager(Path(session.project.path), parent=session)
        session._run_manager = mgr
    return mgr
