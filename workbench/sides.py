"""The words of a judgment from the expert's point of view: what was on the left, what on the right.

The store records a verdict against its own order of the two responses (``a``/``b``: ``response_a`` and
``response_b``) and which of them was shown on the left (``left_side``). The expert never saw ``a`` or ``b``, only
screen sides, so every page of the window speaks of left and right, and only exports use the stored ``a``/``b``.
A judgment without a shown side (an imported one: nothing was shown) is displayed with ``response_a`` on the left,
and its words are about that display.
"""

from __future__ import annotations

STRENGTH_WORDS = {"slight": "slightly better", "clear": "better", "strong": "much better"}
SCREEN_SIDES = ("left", "right")


def other(stored: str) -> str:
    """The other stored response: ``a`` ↔ ``b``."""
    return "b" if stored == "a" else "a"


def shown_left(left_side: str | None) -> str:
    """Which stored response is (or, for a judgment never shown, is displayed) on the left."""
    return left_side or "a"


def stored_side(screen_side: str, left_side: str | None) -> str:
    """The stored response (``a``/``b``) on a screen side (``left``/``right``)."""
    left = shown_left(left_side)
    return left if screen_side == "left" else other(left)


def screen_side(stored: str, left_side: str | None) -> str:
    """The screen side (``left``/``right``) a stored response (``a``/``b``) was shown on."""
    return "left" if stored == shown_left(left_side) else "right"


def stored_verdict(verdict: str, left_side: str | None) -> str:
    """A verdict in screen words (left, right, tie, both_bad) as the store records it (a, b, tie, both_bad)."""
    return stored_side(verdict, left_side) if verdict in SCREEN_SIDES else verdict


def screen_verdict(verdict: str | None, left_side: str | None) -> str | None:
    """A stored verdict (a, b, tie, both_bad) in screen words (left, right, tie, both_bad); None stays None."""
    return screen_side(verdict, left_side) if verdict in ("a", "b") else verdict


def verdict_phrase(verdict: str | None, strength: str | None, left_side: str | None) -> str:
    """``left much better``, ``right slightly better``, ``tie``, ``both bad``, or ``pending``."""
    said = screen_verdict(verdict, left_side)
    if said is None:
        return "pending"
    if said in SCREEN_SIDES:
        return f"{said} {STRENGTH_WORDS.get(strength or '', 'better')}"
    return said.replace("_", " ")
