"""Writing an export's files: a build folder beside OUT renamed into place at the end, byte accounting, and disk-full
errors turned into one clear message.

Every file the export writes itself (the GGUF, the Modelfile) goes through :class:`OutputFile`, which counts the
bytes and can simulate a full disk. Test hook: the environment variable ``RLHF_WORKBENCH_EXPORT_WRITE_LIMIT`` (a
number of bytes) makes the export's writes fail with ``OSError(ENOSPC)`` once that many bytes have been written in
the process, exactly as a disk that fills during the write does; the worker inherits it from whoever starts the
job. Files written by libraries (safetensors, tokenizer files) are checked by the same error handling: an
``OSError`` or a safetensors error saying "No space left on device" becomes the same disk-full message.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from ..jobs import JobError

WRITE_LIMIT_ENV = "RLHF_WORKBENCH_EXPORT_WRITE_LIMIT"
_written = 0


def write_limit() -> int | None:
    """The simulated disk size of the test hook, or None (the real disk)."""
    value = os.environ.get(WRITE_LIMIT_ENV)
    return int(value) if value and value.strip().isdigit() else None


class OutputFile:
    """A binary file open for writing whose every byte is counted (and refused past the test hook's limit)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed by close() / the context manager

    def write(self, data: Any) -> int:
        global _written
        size = memoryview(data).nbytes
        limit = write_limit()
        if limit is not None and _written + size > limit:
            room = max(0, limit - _written)
            if room:
                self._f.write(memoryview(data).cast("B")[:room])
                _written += room
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        self._f.write(data)
        _written += size
        return size

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "OutputFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_text(path: Path, text: str) -> None:
    with OutputFile(path) as f:
        f.write(text.encode("utf-8"))


def is_disk_full(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc)


def write_error(exc: BaseException, out: Path) -> JobError:
    """The user's message for a failure while writing the export (nothing is left behind either way)."""
    if is_disk_full(exc):
        return JobError(f"the disk filled up while writing the export to {out} (no space left on device); free some "
                        "space or choose another OUT; nothing was left behind", kind="input")
    return JobError(f"writing the export to {out} failed ({exc}); nothing was left behind", kind="input")


def check_free_space(folder: Path, needed_bytes: int, out: Path) -> None:
    """Refuse before writing when the disk cannot hold the export (with a tenth to spare)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes * 1.1:
        raise JobError(f"not enough disk space for the export to {out}: it needs about {needed_bytes / 2**20:,.0f} MB, "
                       f"{free / 2**20:,.0f} MB are free", kind="input")


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def move_into_place(build: Path, out: Path) -> None:
    """Rename the finished build folder to OUT (an empty OUT folder is replaced)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    os.replace(build, out)
