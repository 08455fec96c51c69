"""Small shared widgets and helpers: the conversation renderer and a Qt-free side-mapping helper."""

from __future__ import annotations


def conversation_markdown(messages: list[dict[str, str]]) -> str:
    """A prompt (list of role/content messages) as Markdown: each turn under its role in bold."""
    parts = []
    for m in messages:
        role = m.get("role", "?").capitalize()
        parts.append(f"**{role}:**\n\n{m.get('content', '')}")
    return "\n\n---\n\n".join(parts)


def other(side: str) -> str:
    return "b" if side == "a" else "a"
