"""The window's engine thread: a QThread around the Qt-free job client (:mod:`workbench.jobs.client`).

One :class:`EngineRun` is one run seen from the window. Its thread starts the worker (``python -m engine.worker``
through :class:`~workbench.jobs.client.JobClient`), resumes a stopped run, or re-attaches to a run left going in the
background; it reads the worker's events and re-emits them as Qt signals, so the pages never block on a pipe and
the window never imports torch. Commands go the other way on the worker's stdin (cancel; for a long-lived
generation job such as the Playground's, the next prompt).

Whatever way the worker ends — done, an error event, a Python exception, a death by signal (on CPU an
out-of-memory kill is a SIGKILL) — :attr:`EngineRun.finished_run` carries an :class:`Outcome` with the reason and
the tail of the run's logs, and the window goes on working.

Reading is interruptible (``select`` with a short timeout), so :meth:`EngineRun.detach` lets a run go on in the
background while the window closes, and :meth:`EngineRun.stop` ends the thread in a test's teardown.
"""

from __future__ import annotations

import json
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any



from PySide6.QtCore import QObject, QThread, Signal

from workbench.configs import ModelConfig
from workbench.errors import WorkbenchError
from workbench.jobs import protocol
from workbench.jobs.client import JobClient, RunHandle, _pid_alive
from workbench.jobs.protocol import EVENTS_LOG, STDERR_LOG, Event, EventType
from workbench.store import Project

_POLL_S = 0.1


class _Detached(Exception):
    """Raised inside the event stream when the window lets go of a run (it keeps running elsewhere)."""


@dataclass
class Outcome:
    """How a run ended, for the window to show."""

    run_id: int | None
    status: str                      # done | failed | cancelled | detached
    error: str | None = None
    output: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"


def log_tail(run_dir: Path | None, lines: int = 40) -> str:
    """The last log and error lines of a run (events.log), then the end of the worker's stderr (tracebacks)."""
    if run_dir is None:
        return ""
    out: list[str] = []
    try:
        raw = (run_dir / EVENTS_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        raw = []
    for line in raw[-400:]:
        try:
            ev = Event.from_json(line)
        except ValueError:
            continue
        if ev.type == EventType.LOG:
            out.append(f"[{ev.data.get('level', 'info')}] {ev.data.get('message', '')}")
        elif ev.type == EventType.ERROR:
            out.append(f"[error] {ev.data.get('message', '')}")
        elif ev.type == EventType.STATUS:
            out.append(f"[status] {ev.data.get('state')}: {ev.data.get('message', '')}")
    try:
        err = (run_dir / STDERR_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        err = []
    err = [e for e in err if e.strip()]
    if err:
        out.append("--- stderr ---")
        out.extend(err[-lines:])
    return "\n".join(out[-2 * lines:])


def live_runs(project: Project) -> list[dict[str, Any]]:
    """Runs the project says are going and whose worker still lives (to re-attach to after a restart)."""
    return [r for r in project.runs() if r["status"] in ("pending", "running") and _pid_alive(r.get("pid"))]


class EngineRun(QThread):
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
        self._stop = threading.Event()
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
        h = self.handle
        if h is None or h.process is None or h.process.stdin is None or h.process.poll() is not None:
            return False
        try:
            h.process.stdin.write((json.dumps({"command": command, **args}, ensure_ascii=False) + "\n").encode())
            h.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def detach(self) -> None:
        """Stop listening; the worker goes on in the background (a later window re-attaches to it)."""
        self._stop.set()

    def stop(self, timeout_ms: int = 30000) -> bool:
        """For teardown: kill the worker if it still runs, end the thread, wait for it. True when it ended."""
        self.kill()
        ok = self.wait(timeout_ms)
        if not ok:
            self._stop.set()
            ok = self.wait(5000)
        return ok

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
        self.run_id, self.run_dir = handle.run_id, handle.run_dir
        self.started_run.emit(handle.run_id, str(handle.run_dir))
        if pending is not None:
            handle.cancel(pending)
        # Our own line sources, so the thread can stop (detach) without waiting for the worker.
        if handle.process is not None and sys.platform != "win32":
            handle._stdout_events = lambda: self._stdout_events(handle)  # type: ignore[method-assign]
        elif handle.process is None:
            handle._log_events = lambda poll_s: self._log_events(handle)  # type: ignore[method-assign]
        try:
            for ev in handle.events():
                self._dispatch(ev)
        except _Detached:
            self._emit_outcome(Outcome(handle.run_id, "detached"))
            return
        except Exception as e:  # noqa: BLE001
            self._emit_outcome(Outcome(handle.run_id, "failed", error=f"{type(e).__name__}: {e}",
                                       log_tail=log_tail(handle.run_dir)))
            return
        final = handle.final or {}
        status = handle.status or "failed"
        self._emit_outcome(Outcome(
            handle.run_id, status, error=handle.error, output=final.get("output"),
            final_metrics=dict(final.get("final_metrics") or handle.last_metrics),
            summary=dict(final.get("summary") or {}),
            log_tail=log_tail(handle.run_dir) if status != "done" else "",
        ))

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

    def _stdout_events(self, handle: RunHandle) -> Iterator[Event]:
        """The worker's stdout, read with a timeout so :meth:`detach` takes effect within ``_POLL_S``."""
        proc = handle.process
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        while True:
            if self._stop.is_set():
                raise _Detached()
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                ev = _parse(raw)
                if ev is not None:
                    yield ev
        ev = _parse(buf)
        if ev is not None:
            yield ev
        while proc.poll() is None:
            if self._stop.is_set():
                raise _Detached()
            time.sleep(_POLL_S)

    def _log_events(self, handle: RunHandle) -> Iterator[Event]:
        """Tail ``events.log`` of a run started by another window, while its worker lives."""
        path = handle.run_dir / EVENTS_LOG
        pos = 0
        buf = b""
        while True:
            if self._stop.is_set():
                raise _Detached()
            alive = _pid_alive(handle.pid)
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    ev = _parse(raw)
                    if ev is not None:
                        yield ev
                        if ev.terminal:
                            return
            if not alive:
                return
            time.sleep(0.2)


def _parse(raw: bytes) -> Event | None:
    line = raw.decode("utf-8", "replace").strip()
    if not line:
        return None
    try:
        return Event.from_json(line)
    except (ValueError, KeyError):
        # Stray output from a library: keep it visible as a log line.
        return protocol.log(line, level="stdout")


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
        self.jobs: list[EngineRun] = []

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

    def live_jobs(self) -> list[EngineRun]:
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
