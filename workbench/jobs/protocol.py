"""The job protocol: events a worker streams (one JSON object per line) and the commands it accepts.

An event is ``{"type": ..., "time": unix seconds, "step": int | null, "data": {...}}`` with type one of:

- ``status``: ``data.state`` in starting | running | done | failed | cancelled (and ``data.message``);
- ``progress``: ``step``, ``data.total``, ``data.epoch``, ``data.tokens``, ``data.tokens_per_s``, ``data.eta_s``;
- ``metrics``: ``data`` is a flat dict of floats with ``/``-separated keys (``train/loss``, ``eval/loss``);
- ``checkpoint``: ``data.path``, ``data.best`` (bool);
- ``log``: ``data.level``, ``data.message``;
- ``done``: ``data.output`` (adapter folder), ``data.final_metrics``, ``data.summary`` (tokens_per_s, peak_mem_mb…);
- ``error``: ``data.message`` (one clear sentence for the user), ``data.kind`` (input | oom | nan | signal | crash),
  ``data.traceback`` when there is one.

Commands go to the worker's stdin, one JSON object per line: ``{"command": "cancel"}`` (the worker's own: stop after
the current step, with a checkpoint), or any other name with its arguments, which the worker hands to the job on
``ctx.commands`` (``{"command": "chat", "id": 1, "messages": [...]}`` for the Playground).
The worker also appends every event to ``RUN_DIR/events.log``, so a run can be re-attached to.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

EVENTS_LOG = "events.log"
CONFIG_FILE = "config.yaml"
JOB_FILE = "job.json"
STDERR_LOG = "stderr.log"

TERMINAL_STATES = ("done", "failed", "cancelled")


class EventType(str, Enum):
    STATUS = "status"
    PROGRESS = "progress"
    METRICS = "metrics"
    CHECKPOINT = "checkpoint"
    LOG = "log"
    DONE = "done"
    ERROR = "error"


class Command(str, Enum):
    CANCEL = "cancel"


@dataclass
class Event:
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(
            {"type": self.type.value, "time": round(self.time, 3), "step": self.step, "data": self.data},
            ensure_ascii=False, separators=(",", ":"), allow_nan=True, default=str,
        )

    @classmethod
    def from_json(cls, line: str) -> "Event":
        """Parse one line; raises ValueError for a line that is not an event (e.g. stray library output)."""
        obj = json.loads(line)
        if not isinstance(obj, dict) or "type" not in obj:
            raise ValueError(f"not an event: {line[:80]!r}")
        return cls(EventType(obj["type"]), obj.get("data") or {}, obj.get("step"), float(obj.get("time") or 0.0))

    @property
    def terminal(self) -> bool:
        """True for the last event a run sends (done, error, or a final status)."""
        return self.type in (EventType.DONE, EventType.ERROR) or (
            self.type == EventType.STATUS and self.data.get("state") in TERMINAL_STATES
        )


def status(state: str, message: str = "", step: int | None = None, **extra: Any) -> Event:
    return Event(EventType.STATUS, {"state": state, "message": message, **extra}, step)


def progress(step: int, total: int, **data: Any) -> Event:
    return Event(EventType.PROGRESS, {"total": total, **data}, step)


def metrics(step: int, values: dict[str, float]) -> Event:
    return Event(EventType.METRICS, dict(values), step)


def log(message: str, level: str = "info", step: int | None = None) -> Event:
    return Event(EventType.LOG, {"level": level, "message": message}, step)


def error(message: str, kind: str = "crash", step: int | None = None, **extra: Any) -> Event:
    return Event(EventType.ERROR, {"message": message, "kind": kind, **extra}, step)


def command_line(command: Command | str, **args: Any) -> str:
    """One command as a line for the worker's stdin. ``cancel`` is the worker's own; any other name (with its
    arguments) is handed to the job (e.g. the Playground's ``chat``)."""
    name = command.value if isinstance(command, Command) else str(command)
    if not name.isidentifier():
        raise ValueError(f"not a command name: {name!r}")
    return json.dumps({"command": name, **args}, ensure_ascii=False) + "\n"


def parse_command(line: str) -> tuple[str, dict[str, Any]] | None:
    """A command line from stdin, or None for a blank or unreadable line (ignored, never fatal)."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return (line, {}) if line.isidentifier() else None
    if not isinstance(obj, dict) or "command" not in obj:
        return None
    return str(obj.pop("command")), obj
