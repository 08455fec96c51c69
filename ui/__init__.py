"""The Qt window of RLHF Workbench: the annotation desk (compare, rank, write, flag) and its pages.

Imports only ``workbench`` (the Qt-free core), PySide6 and, lazily on the Dashboard page, pyqtgraph; never torch,
the model libraries or ``engine`` (import-linter enforces it), so the window starts fast and cannot be crashed by
them.
"""

from ._none_refcount import make_none_immortal

make_none_immortal()
