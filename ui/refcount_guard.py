"""A guard against a reference-counting bug of PySide6 6.12 on Python 3.11 that ends the window with
"Fatal Python error: none_dealloc" (or "bool_dealloc").

Measured here (PySide6 6.12.0, CPython 3.11.7): every call of a Qt method that returns nothing (``setText``,
``hide``, ``processEvents``, pyqtgraph's ``setData`` makes ten of them) takes one reference away from ``None``
without having given it; ``Signal.emit()`` does the same to ``True``. ``None`` starts with a few thousand
references, so after some thousands of such calls — a minute of live charts, or a long annotation session — its
count reaches zero and CPython aborts the process. (Python 3.12 made ``None``, ``True`` and ``False`` immortal,
which is why the bug does not show there.)

:func:`protect` gives these three objects a reserve of 2**40 references, which no session can use up (a million
leaked references a second would take 12 days). It touches nothing on Python 3.12 or later, and is idempotent.
Call it once at start-up, before building widgets; the training-desk modules call it on import.
"""

from __future__ import annotations

import ctypes
import sys

RESERVE = 1 << 40
_done = False


def protect() -> bool:
    """Give None, True and False a reserve of references (CPython < 3.12 only). True when it did something."""
    global _done
    if _done or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    for obj in (None, True, False):
        # ob_refcnt is the first field of every CPython object (Include/object.h), a Py_ssize_t.
        ctypes.c_ssize_t.from_address(id(obj)).value += RESERVE
    _done = True
    return True
