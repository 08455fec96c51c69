"""The plain records the store hands out (prompts, responses, comparisons, History rows, undo results), the
timestamp every row carries, and the check of a value against its allowed choices.

Qt-free and SQL-free: callers read these, never the tables behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import WorkbenchError
from ..messages import last_user_text
from ..sides import verdict_phrase


def now_iso() -> str:
    """UTC time with milliseconds, the form every timestamp in the project file takes."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_choice(value: Any, allowed: Sequence[Any], what: str) -> None:
    """Refuse ``value`` unless it is one of ``allowed``, naming ``what`` it is."""
    if value not in allowed:
        raise WorkbenchError(f"{what} must be one of {', '.join(map(str, allowed))}, not {value!r}")


@dataclass
class Prompt:
    id: int
    messages: list[dict[str, str]]
    source: str
    split: str
    tags: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return last_user_text(self.messages)


@dataclass
class Response:
    id: int
    prompt_id: int
    content: str
    origin: str
    source: str = ""
    model: str | None = None
    adapter: str | None = None
    sampling: dict[str, Any] | None = None
    seed: int | None = None


@dataclass
class Comparison:
    id: int
    prompt_id: int
    response_a: int
    response_b: int
    verdict: str | None = None
    strength: str | None = None
    left_side: str | None = None
    criteria: dict[str, str] | None = None
    note: str | None = None
    time_spent_ms: int | None = None
    guideline_version: int | None = None
    judged_at: str | None = None
    source: str = ""
    kind: str = "train"
    retest_of: int | None = None
    retracted_at: str | None = None


@dataclass(frozen=True)
class Undone:
    """What undoing a judgment did: ``how`` is ``cleared`` (the row is pending again) or ``retracted`` (the row is
    kept, marked, and a fresh pending copy took its place); ``item`` is the pending comparison now in the queue."""

    how: str
    item: Comparison


@dataclass
class Demonstration:
    """An expert-written answer: the response holding its text, and the response it was edited from, if any."""

    id: int
    prompt_id: int
    response_id: int
    edited_from: int | None = None
    note: str | None = None
    source: str = ""
    retracted_at: str | None = None


@dataclass
class Flag:
    """One safety label as a screen shows it: on a response, or on the prompt text when ``response_id`` is None."""

    id: int
    prompt_id: int
    response_id: int | None
    category: str
    severity: str | None
    note: str | None
    present: bool = True


@dataclass
class HistoryRow:
    """One line of the History page: a judgment, ranking, demonstration or flag. A comparison carries its verdict
    as stored (``verdict``, ``strength``, ``left_side``); :attr:`detail` words it from the expert's point of view."""

    kind: str
    id: int
    when: str
    prompt_id: int
    title: str
    detail: str
    retracted: bool
    verdict: str | None = None
    strength: str | None = None
    left_side: str | None = None
    retest: bool = False
    note: str | None = None

    def __post_init__(self) -> None:
        if self.kind == "comparison" and not self.detail:
            words = [verdict_phrase(self.verdict, self.strength, self.left_side)]
            if self.left_side is None:
                words.append("not shown side by side")
            if self.retest:
                words.append("retest")
            if self.note:
                words.append(f"note: {self.note}")
            self.detail = " · ".join(words)

    @property
    def cursor(self) -> tuple[str, str, int]:
        """Where a History page ending at this row stops (the next page starts after it)."""
        return (self.when, self.kind, self.id)
