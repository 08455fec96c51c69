"""Conversations as lists of ``{role, content}`` messages: validation and canonical content hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import WorkbenchError

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_MESSAGE_CHARS = 2 * 1024 * 1024  # 2 MB of text per message, configurable


class MessageError(WorkbenchError, ValueError):
    """A conversation that is not a list of well-formed messages; ``field`` names the culprit and ``detail`` says
    what is wrong with it (``str()`` gives both)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.detail = message


def validate_messages(
    messages: Any,
    *,
    field: str = "messages",
    max_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    allow_empty: bool = False,
) -> list[dict[str, str]]:
    """Return a clean copy of ``messages`` or raise MessageError saying which message is wrong and why."""
    if not isinstance(messages, list):
        raise MessageError(f"expected a list of messages, got {type(messages).__name__}", field)
    if not messages and not allow_empty:
        raise MessageError("the conversation is empty", field)
    clean: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise MessageError(f"expected an object with role and content, got {type(m).__name__}", where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise MessageError(f"unknown role {role!r} (expected one of {', '.join(ROLES)})", f"{where}.role")
        if not isinstance(content, str):
            raise MessageError(f"content must be text, got {type(content).__name__}", f"{where}.content")
        check_size(content, f"{where}.content", max_chars)
        clean.append({"role": role, "content": content})
    return clean


def check_size(text: str, field: str, max_chars: int = DEFAULT_MAX_MESSAGE_CHARS) -> None:
    """Refuse text over the size cap, naming the field."""
    if len(text) > max_chars:
        raise MessageError(
            f"text of {len(text):,} characters is over the size cap of {max_chars:,}", field
        )


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the form that hashes are taken of and that is stored."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_hash(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``: equal content, equal hash."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def prompt_hash(messages: list[dict[str, str]]) -> str:
    return content_hash(["prompt", messages])


def response_hash(content: str) -> str:
    return content_hash(["response", content])


def last_user_text(messages: list[dict[str, str]]) -> str:
    """The text of the last user turn (for lists, search and short titles)."""
    for m in reversed(messages):
        if m["role"] == "user":
            return m["content"]
    return messages[-1]["content"] if messages else ""
