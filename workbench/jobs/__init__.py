"""Jobs: the event protocol (:mod:`.protocol`) and the Qt-free client that runs ``python -m engine.worker``
(:mod:`.client`). The CLI renders a client's events as a progress bar; the window wraps the same client in a
QThread."""

from .client import JobClient, RunHandle, run_dir_for
from .protocol import Event, EventType

__all__ = ["Event", "EventType", "JobClient", "RunHandle", "run_dir_for"]
