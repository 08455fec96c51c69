"""Errors the core raises for the user: each names where the problem is (file, line or row, field)."""

from __future__ import annotations

import unicodedata

# Characters that would break an error's single line or reorder how it reads (line and paragraph separators,
# control and format characters such as bidi overrides): shown as escapes when they come from the user's data.
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")


def one_line(text: str) -> str:
    """``text`` with every character that is not printable on one line escaped (``\\n``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in _UNSAFE_CATEGORIES
                   else ch for ch in text)


class WorkbenchError(Exception):
    """Base class of every error meant to be shown to the user as one clear message."""


class NotAProjectError(WorkbenchError):
    """The file is not an RLHF Workbench project (not SQLite, or SQLite without our metadata)."""


class DamagedProjectError(NotAProjectError):
    """The file is an RLHF Workbench project that SQLite can no longer read whole (a truncated or overwritten file)."""


class ReadOnlyProjectError(WorkbenchError):
    """A change was asked of a project opened read-only (its file or folder is not writable)."""


class DiskFullError(WorkbenchError):
    """A write ran out of disk space (or reached the file's size limit); what it was writing was not saved."""


class NewerSchemaError(WorkbenchError):
    """The project was written by a newer version of the app than this one."""


class ProjectLockedError(WorkbenchError):
    """Another window already has the project open."""


class InputError(WorkbenchError):
    """Bad input data: carries the file and line/row so the message says exactly where."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, field: str | None = None):
        # Messages quote the user's data (keys, values, names): keep the whole error on one readable line.
        message, path = one_line(str(message)), (one_line(str(path)) if path is not None else None)
        field = one_line(str(field)) if field is not None else None
        self.path = path
        self.line = line
        self.field = field
        self.detail = message
        place = ":".join(x for x in (str(path) if path else "", f"line {line}" if line is not None else "") if x)
        named = f"field '{field}'" if field else ""
        if place and named:
            prefix = f"{place} ({named})" if line is not None else f"{place}, {named}"
        else:
            prefix = place or named
        super().__init__(f"{prefix}: {message}" if prefix else message)
