"""What every format parser shares: the import context (file, source, size cap, staging), field access that
raises InputError naming file, line and field, the shared-prefix split of two conversations, and the mapping of a
TRL ``margin`` back to a strength."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..errors import InputError
from ..messages import MessageError, check_size, validate_messages
from ..reports import ImportReport
from .reading import Record
from .staging import Staging

Messages = list[dict[str, str]]


@dataclass
class Context:
    """One import in progress: parsers read records and stage rows through it."""

    path: Path
    source: str
    max_chars: int
    staging: Staging
    report: ImportReport
    explicit_source: bool = False  # the user named the source: use it as is, add no model suffix
    container: str = "jsonl"  # what a record's number counts: JSONL lines, CSV rows or JSON array items

    def error(self, message: str, record: Record | int | None = None, field: str | None = None) -> NoReturn:
        line = record.line if isinstance(record, Record) else record
        # InputError says "line N"; say what N counts when it is not a physical line.
        if line is not None and self.container == "csv":
            message = f"{message} (CSV row {line}, counting the header as row 1)"
        elif line is not None and self.container == "json":
            message = f"{message} (JSON array item [{line}])"
        raise InputError(message, str(self.path), line, field)

    def require(self, record: Record, *fields: str) -> None:
        """Every field present (the format is wrong otherwise: say which one is missing)."""
        for f in fields:
            if f not in record.data:
                have = ", ".join(sorted(record.data)) or "none"
                self.error(f"missing field {f!r} (this record has: {have})", record, f)

    def text(self, record: Record, field: str, *, allow_empty: bool = True) -> str:
        """A required text field, checked against the size cap."""
        self.require(record, field)
        value = record.data[field]
        if not isinstance(value, str):
            self.error(f"expected text, got {_kind(value)}", record, field)
        if not allow_empty and not value.strip():
            self.error("is empty", record, field)
        self.check_size(value, record, field)
        return value

    def check_size(self, text: str, record: Record, field: str) -> None:
        try:
            check_size(text, field, self.max_chars)
        except MessageError as e:
            self.error(getattr(e, "detail", str(e)), record, e.field)

    def messages(self, value: Any, record: Record, field: str, *, allow_empty: bool = False) -> Messages:
        """A list of {role, content} messages, validated (roles, text, size cap)."""
        try:
            return validate_messages(value, field=field, max_chars=self.max_chars, allow_empty=allow_empty)
        except MessageError as e:
            self.error(getattr(e, "detail", str(e)), record, e.field)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", bool: "true/false", type(None): "null"}.get(type(value), type(value).__name__)


def user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def split_shared_prefix(a: Messages, b: Messages) -> int | None:
    """Where two conversations stop sharing a prompt: the largest k such that a[:k] == b[:k], a[k-1] is not an
    assistant turn and both a[k] and b[k] are assistant turns (the two replies). None when there is no such k."""
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    for k in range(n, 0, -1):
        if (
            k < len(a) and k < len(b)
            and a[k]["role"] == "assistant" and b[k]["role"] == "assistant"
            and a[k - 1]["role"] != "assistant"
        ):
            return k
    return None


# Our TRL export writes DEFAULT_STRENGTH_MARGIN (slight 1/3, clear 2/3, strong 1, none 0); any margin maps to the
# nearest of those, so an export re-imports unchanged and foreign margins land somewhere sensible.
def strength_from_margin(value: Any, ctx: Context, record: Record, field: str = "margin") -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        ctx.error("expected a number, got true/false", record, field)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            ctx.error(f"expected a number, got {value!r}", record, field)
    if not isinstance(value, (int, float)) or math.isnan(value):
        ctx.error(f"expected a number, got {_kind(value)}", record, field)
    if value < 0:
        ctx.error(f"a margin must not be negative (got {value}); chosen is the preferred response", record, field)
    if value < 1 / 6:
        return None
    if value < 1 / 2:
        return "slight"
    if value < 5 / 6:
        return "clear"
    return "strong"


def parse_bool(value: Any, ctx: Context, record: Record, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    ctx.error(f"expected true or false, got {value!r}", record, field)


def derived_source(prefix: str, path: Path) -> str:
    """A readable source name from the file: ``prefix:stem``, with the folder name when the stem is generic
    (``anthropic-hh-rlhf/harmless-base/test.jsonl.gz`` → ``hh-rlhf:harmless-base``)."""
    stem = path.name
    for ext in (".gz", ".jsonl", ".ndjson", ".json", ".csv", ".tsv"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    generic = {"test", "train", "validation", "valid", "dev", "data", "question", "questions", "samples", ""}
    if stem.lower() in generic and path.parent.name:
        stem = path.parent.name
    return f"{prefix}:{stem}" if stem else prefix
