"""The job client: starts ``python -m engine.worker RUN_DIR`` for a run, iterates its events, sends commands.

Qt-free, so the CLI uses it directly and the window wraps it in a QThread. One way to run a job:

1. :meth:`JobClient.start` refuses a training run on an architecture the trainers cannot train
   (:func:`workbench.model_files.model_refusal`, from its ``config.json``), then creates the run row (``project.create_run``), the run folder
   ``runs_dir(project)/<run_id>`` with ``config.yaml`` and ``job.json``, then spawns the worker in its own process
   session (so the run outlives whoever started it) with stderr going to ``stderr.log``.
2. :meth:`RunHandle.events` yields :class:`~workbench.jobs.protocol.Event` records read from the worker's stdout
   (or, for a run started elsewhere, from its ``events.log``), and when the worker is gone without saying so,
   records the run as failed, naming the signal that killed it (on CPU an out-of-memory kill is a SIGKILL).
   Reading polls (``poll_s``), so :meth:`RunHandle.detach`, from any thread, ends the stream within one poll
   without a terminal event: the worker goes on in the background and a later :meth:`JobClient.attach` reads
   the rest from its log. That is how the window lets a run outlive it, and how a test's teardown ends a
   thread that is reading.
3. :meth:`RunHandle.cancel` asks the worker to stop (cooperative: it checkpoints, then exits with status
   cancelled) and kills its whole process group if it has not exited after a timeout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configs import ModelConfig, config_class
from ..errors import WorkbenchError
from ..model_files import model_refusal
from ..paths import runs_dir
from ..store import Project, now_iso
from ..train_checks import STAGES
from . import protocol
from .protocol import CONFIG_FILE, EVENTS_LOG, JOB_FILE, STDERR_LOG, Command, Event, EventType


@dataclass
class Outcome:
    """How a run ended, for a window or a pipeline to show: ``status`` is done, failed, cancelled or detached (the
    reader let go; the worker goes on)."""

    run_id: int | None
    status: str
    error: str | None = None
    output: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"


def run_dir_for(project_path: str | os.PathLike[str], run_id: int) -> Path:
    return runs_dir(project_path) / str(run_id)


def _pid_alive_windows(pid: int) -> bool:
    # os.kill(pid, 0) on Windows sends CTRL_C_EVENT (signal 0) instead of probing: ask the kernel instead.
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists, it is not ours
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def pid_alive(pid: int | None) -> bool:
    """Whether the process ``pid`` exists and is not a zombie (another user's process counts as alive)."""
    if not pid:
        return False
    if os.name == "nt":
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _parse_line(raw: bytes) -> Event | None:
    """One line of the worker's stdout as an event; stray output from a library becomes a log line instead of
    breaking the stream; a blank line is None."""
    line = raw.decode("utf-8", "replace").strip()
    if not line:
        return None
    try:
        return Event.from_json(line)
    except (ValueError, KeyError):
        return protocol.log(line, level="stdout")


def live_runs(project: Project) -> list[dict[str, Any]]:
    """Runs the project says are going and whose worker still lives (to re-attach to after a restart)."""
    return [r for r in project.runs() if r["status"] in ("pending", "running") and pid_alive(r.get("pid"))]


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


def _signal_group(pid: int, sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class RunHandle:
    """One running (or finished) run: its events, its final status, and the means to cancel it."""

    def __init__(self, project_path: Path | None, run_id: int | None, run_dir: Path,
                 process: subprocess.Popen | None = None, pid: int | None = None):
        self.project_path = project_path
        self.run_id = run_id
        self.run_dir = run_dir
        self.process = process
        self.pid = process.pid if process is not None else pid
        self.status: str | None = None
        self.error: str | None = None
        self.final: dict[str, Any] = {}
        self.last_metrics: dict[str, float] = {}
        self._cancel_requested = False
        self._hard_killed = False
        self._kill_timer: threading.Timer | None = None
        self._detach = threading.Event()

    # ------------------------------------------------------------------ events
    def events(self, poll_s: float = 0.2) -> Iterator[Event]:
        """Every event until the run ends; the last one is always terminal (done, error or a final status). After
        :meth:`detach` the stream ends within ``poll_s`` with no terminal event (:attr:`detached` is then True)."""
        source = self._stdout_events(poll_s) if self.process is not None else self._log_events(poll_s)
        saw_terminal = False
        for ev in source:
            self._note(ev)
            saw_terminal = saw_terminal or ev.terminal
            yield ev
        if self.detached:
            return
        ending = self._finish(saw_terminal)
        if ending is not None:
            yield ending

    def detach(self) -> None:
        """Stop reading (any thread): :meth:`events` ends within one poll and the worker goes on by itself."""
        self._detach.set()

    @property
    def detached(self) -> bool:
        return self._detach.is_set()

    def outcome(self) -> Outcome:
        """How the run ended, once :meth:`events` is drained (or detached)."""
        if self.detached and self.status is None:
            return Outcome(self.run_id, "detached")
        final = self.final or {}
        status = self.status or "failed"
        return Outcome(
            self.run_id, status, error=self.error, output=final.get("output"),
            final_metrics=dict(final.get("final_metrics") or self.last_metrics),
            summary=dict(final.get("summary") or {}),
            log_tail=log_tail(self.run_dir) if status != "done" else "",
        )

    def wait(self) -> str:
        """Drain the events; returns the final status."""
        for _ in self.events():
            pass
        return self.status or "failed"

    def _stdout_events(self, poll_s: float) -> Iterator[Event]:
        """The worker's stdout, line by line, until it closes (or :meth:`detach`)."""
        proc = self.process
        assert proc is not None and proc.stdout is not None
        if sys.platform == "win32":
            # select() takes no pipes on Windows: read blocking lines; a detach takes effect at the next line.
            for raw in proc.stdout:
                if self.detached:
                    return
                ev = _parse_line(raw)
                if ev is not None:
                    yield ev
        else:
            fd = proc.stdout.fileno()
            buf = b""
            while True:
                if self.detached:
                    return
                ready, _, _ = select.select([fd], [], [], poll_s)
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    ev = _parse_line(raw)
                    if ev is not None:
                        yield ev
            ev = _parse_line(buf)
            if ev is not None:
                yield ev
        while proc.poll() is None:
            if self.detached:
                return
            time.sleep(poll_s)

    def _log_events(self, poll_s: float) -> Iterator[Event]:
        """Tail ``events.log`` while the worker process lives (a run started by someone else)."""
        path = self.run_dir / EVENTS_LOG
        pos = 0
        buf = b""
        while not self.detached:
            alive = pid_alive(self.pid)
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    if raw.strip():
                        try:
                            ev = Event.from_json(raw.decode("utf-8", "replace"))
                        except ValueError:
                            continue
                        yield ev
                        if ev.terminal:
                            return
            if not alive:
                return
            self._detach.wait(poll_s)

    def _note(self, ev: Event) -> None:
        if ev.type == EventType.METRICS:
            self.last_metrics.update(ev.data)
        elif ev.type == EventType.DONE:
            self.status = "done"
            self.final = dict(ev.data)
        elif ev.type == EventType.ERROR:
            self.status = "failed"
            self.error = ev.data.get("message")
        elif ev.type == EventType.STATUS and ev.data.get("state") in protocol.TERMINAL_STATES:
            self.status = ev.data["state"]
            if ev.data.get("message") and self.status != "done":
                self.error = self.error or ev.data["message"]

    def _finish(self, saw_terminal: bool) -> Event | None:
        """After the stream ends: if the worker died without reporting, record why in the project and the log."""
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        rc = self.process.returncode if self.process is not None else None
        if saw_terminal:
            return None
        if self._cancel_requested:
            state, kind = "cancelled", "cancel"
            message = "cancelled; the worker did not stop in time and was killed" if self._hard_killed else "cancelled"
        elif rc is not None and rc < 0:
            state, kind = "failed", "signal"
            name = signal_name(rc)
            message = f"the worker was killed by {name}"
            if name == "SIGKILL":
                message += " (on CPU this is usually the system running out of memory)"
        else:
            state, kind = "failed", "crash"
            tail = self._stderr_tail()
            code = f" with exit code {rc}" if rc is not None else ""
            message = f"the worker exited{code} without reporting a result" + (f": {tail}" if tail else "")
        self.status, self.error = state, (None if state == "cancelled" and not self._hard_killed else message)
        ev = protocol.error(message, kind=kind) if state == "failed" else protocol.status(state, message)
        self._append_log(ev)
        self._record(state, message)
        return ev

    def _stderr_tail(self) -> str:
        p = self.run_dir / STDERR_LOG
        try:
            lines = [ln for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][-300:] if lines else ""

    def _append_log(self, ev: Event) -> None:
        try:
            with open(self.run_dir / EVENTS_LOG, "a", encoding="utf-8") as f:
                f.write(ev.to_json() + "\n")
        except OSError:
            pass

    def _record(self, state: str, message: str) -> None:
        if self.run_id is None:  # a job without a run row (an export)
            return
        try:
            with Project.open(self.project_path, migrate=False) as project:
                run = project.get_run(self.run_id)
                if run["status"] in ("pending", "running"):
                    project.update_run(self.run_id, status=state, error=message if state != "cancelled" or self._hard_killed else None,
                                       finished_at=now_iso())
        except WorkbenchError:
            pass

    # ------------------------------------------------------------------ commands
    def send(self, command: Command | str, **args: Any) -> bool:
        """Write a command to the worker's stdin; False when it cannot be reached that way."""
        if self.process is None or self.process.stdin is None or self.process.poll() is not None:
            return False
        try:
            self.process.stdin.write(protocol.command_line(command, **args).encode())
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):  # ValueError: the pipe was closed under us
            return False

    def cancel(self, timeout_s: float = 60.0) -> None:
        """Ask the worker to stop (it checkpoints first); kill its process group if it is still there after
        ``timeout_s``. A re-attached run (no stdin) gets SIGTERM, which the worker treats as cancel."""
        self._cancel_requested = True
        if not self.send(Command.CANCEL) and pid_alive(self.pid):
            _signal_group(self.pid, signal.SIGTERM)
        if self._kill_timer is None:
            self._kill_timer = threading.Timer(timeout_s, self.kill)
            self._kill_timer.daemon = True
            self._kill_timer.start()

    def kill(self) -> None:
        """Hard kill of the worker and everything it started (its own process group)."""
        if self.pid and pid_alive(self.pid):
            self._hard_killed = True
            _signal_group(self.pid, getattr(signal, "SIGKILL", signal.SIGTERM))

    @property
    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)


class JobClient:
    """Starts and re-attaches to runs of one project file."""

    def __init__(self, project_path: str | os.PathLike[str], *, python: str | None = None):
        self.project_path = Path(project_path)
        self.python = python or sys.executable

    def start(self, stage: str, config: ModelConfig, *, parent_run: int | None = None) -> RunHandle:
        """Create the run row and folder, write the config, spawn the worker."""
        run_id, run_dir = self.prepare(stage, config, parent_run=parent_run)
        return self._spawn(run_id, run_dir, resume=False, num_processes=getattr(config, "num_processes", 1))

    def prepare(self, stage: str, config: ModelConfig, *, parent_run: int | None = None) -> tuple[int, Path]:
        """The run row (status pending) and its folder with ``config.yaml`` and ``job.json``, without starting it."""
        expected = config_class(stage)
        if not isinstance(config, expected):
            raise WorkbenchError(f"a {stage} run needs a {expected.__name__}, not a {type(config).__name__}")
        # a config the worker would refuse on loading is refused here, before a run row or folder exists
        config.validate()
        if stage in STAGES:
            refusal = model_refusal(config.base_model)
            if refusal:
                raise WorkbenchError(f"base_model {config.base_model}: {refusal}")
        with Project.open(self.project_path) as project:
            run_id = project.create_run(
                stage, config.to_dict(), name=config.name, base_model=config.base_model,
                adapter_from=config.adapter_from, snapshot_id=getattr(config, "snapshot_id", None), parent_run=parent_run,
            )
            run_dir = run_dir_for(self.project_path, run_id)
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                config.save(run_dir / CONFIG_FILE)
                self._write_job(run_dir, stage, run_id)
                project.update_run(run_id, output_dir=str(run_dir))
            except OSError as e:
                project.update_run(run_id, status="failed", error=f"cannot create the run folder {run_dir}: {e}",
                                   finished_at=now_iso())
                raise WorkbenchError(f"cannot create the run folder {run_dir}: {e}") from e
        return run_id, run_dir

    def resume(self, run_id: int) -> RunHandle:
        """Start the worker again on a stopped run's folder; it continues from the last checkpoint."""
        run_dir = run_dir_for(self.project_path, run_id)
        with Project.open(self.project_path) as project:
            run = project.get_run(run_id)
            if run["status"] == "running" and pid_alive(run.get("pid")):
                raise WorkbenchError(f"run {run_id} is still running (pid {run['pid']}); attach to it instead")
            if run["status"] == "done":
                raise WorkbenchError(f"run {run_id} has finished; nothing to resume")
            if not (run_dir / "checkpoints").is_dir() or not any((run_dir / "checkpoints").iterdir()):
                raise WorkbenchError(f"run {run_id} has no checkpoint to resume from ({run_dir / 'checkpoints'})")
            project.update_run(run_id, status="pending", error=None, finished_at=None)
        num = int(run.get("config", {}).get("num_processes") or 1)
        return self._spawn(run_id, run_dir, resume=True, num_processes=num)

    def attach(self, run_id: int) -> RunHandle:
        """A handle on a run started elsewhere (e.g. by a window that was closed): its events come from the log."""
        with Project.open(self.project_path) as project:
            run = project.get_run(run_id)
        run_dir = Path(run["output_dir"]) if run.get("output_dir") else run_dir_for(self.project_path, run_id)
        return RunHandle(self.project_path, run_id, run_dir, pid=run.get("pid"))

    def _write_job(self, run_dir: Path, stage: str, run_id: int) -> None:
        job = {"stage": stage, "run_id": run_id, "project": str(self.project_path.resolve())}
        (run_dir / JOB_FILE).write_text(json.dumps(job, indent=1) + "\n", encoding="utf-8")

    def _spawn(self, run_id: int, run_dir: Path, *, resume: bool, num_processes: int = 1) -> RunHandle:
        process = spawn_worker(self.python, run_dir, resume=resume, num_processes=num_processes)
        with Project.open(self.project_path) as project:
            project.update_run(run_id, pid=process.pid)
        return RunHandle(self.project_path, run_id, run_dir, process)


def spawn_worker(python: str, run_dir: Path, *, resume: bool = False, num_processes: int = 1) -> subprocess.Popen:
    """Start ``python -m engine.worker RUN_DIR`` (under ``accelerate launch`` for several processes) in its own
    process session, stdout piped for events, stderr into the run folder's ``stderr.log``."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if num_processes > 1:
        # accelerate's multi-process launcher (torch elastic); on a machine without CUDA it runs CPU processes
        # that talk over gloo (accelerate's MULTI_CPU), which ACCELERATE_USE_CPU selects.
        # Port 0: accelerate picks a free port for the processes' rendezvous. Its default, 29500, is one port for
        # the whole machine, so two distributed runs starting together (two test suites, a run beside a benchmark)
        # could both find it free and then collide.
        cmd = [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
               str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "0", "-m", "engine.worker", str(run_dir)]
        if _cpu_only():
            env["ACCELERATE_USE_CPU"] = "true"
    else:
        cmd = [python, "-m", "engine.worker", str(run_dir)]
    if resume:
        cmd.append("--resume")
    with open(run_dir / STDERR_LOG, "ab") as err:
        # Its own session (process group): the run outlives whoever started it, and a hard kill reaches every
        # process it started (accelerate's ranks too).
        session = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32"
                   else {"start_new_session": True})
        process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, **session,
        )
    return process


def _cpu_only() -> bool:
    """Whether to launch several CPU processes: no CUDA device is visible (checked without importing torch)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return True
    return not Path("/dev/nvidiactl").exists()
