"""Work around a PySide6 6.12 defect (also seen for True/False) on Python 3.11: every call of a Qt method that returns nothing (``setText``,
``hide``, ``repaint`` …) gives ``None`` back without taking a reference to it, so ``None``'s reference count drops
by one per call. After a few thousand calls (a few hundred annotated items) it reaches zero and the interpreter
aborts with "Fatal Python error: none_dealloc". Python 3.12 made ``None`` immortal (PEP 683), which hides the
defect there.

On Python < 3.12 we add 2**40 references to ``None`` once at start-up: ``None`` is never freed anyway, and a
session would need about a trillion such calls to use them up. Checked by tests/ui/test_none_refcount.py.
"""

from __future__ import annotations

import ctypes
import sys

HEADROOM = 1 << 40


def make_none_immortal() -> None:
    if sys.version_info >= (3, 12) or getattr(make_none_immortal, "done", False):
        return
    # ob_refcnt is the first field of every PyObject, at the object's address (CPython's id()). True and False
    # get the same headroom: a long benchmark run also ended in "bool_dealloc" at exit.
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += HEADROOM
    make_none_immortal.done = True  # type: ignore[attr-defined]
