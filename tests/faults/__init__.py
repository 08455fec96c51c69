"""Fault injection under real processes: ``enospc_library`` builds a small shared library that, preloaded, makes
writes to chosen files fail with ENOSPC (a full disk) while a flag file exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("enospc.c")


def enospc_library(folder: Path) -> Path:
    """Compile ``enospc.c`` into ``folder`` (the machine's C compiler, which set-up's Python headers come with)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler on this machine (gcc) to build the full-disk fault library"
    out = folder / "libwbenospc.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SOURCE), "-ldl"], check=True)
    return out
