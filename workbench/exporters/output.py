"""Where an export goes and how it gets there atomically: JSON Lines files and Hugging Face ``datasets`` folders.

An ``out`` ending in ``.jsonl`` is written as JSON Lines (``.jsonl.gz``: gzip-compressed JSON Lines); any other
``out`` is a folder written with ``Dataset.save_to_disk`` that ``datasets.load_from_disk`` opens unchanged. Both
are written beside the target under a temporary name and renamed into place at the end, so a failure (bad
input, a full disk, Ctrl-C) leaves no half-written export; a previous export at ``out`` is replaced only once
the new one is complete.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def is_jsonl(out: str | os.PathLike[str]) -> bool:
    name = str(out).lower()
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


class RowEncoder:
    """JSON for one row. The ``prompt`` lists are shared between rows of the same prompt (see training_data), so
    their JSON is encoded once per list object and spliced in: the export's hot path."""

    def __init__(self) -> None:
        self._prompt_json: dict[int, tuple[Any, str]] = {}

    def __call__(self, row: Mapping[str, Any]) -> str:
        prompt = row.get("prompt")
        if not isinstance(prompt, list):
            return _dumps(row)
        key = id(prompt)
        cached = self._prompt_json.get(key)
        if cached is None or cached[0] is not prompt:
            cached = self._prompt_json[key] = (prompt, _dumps(prompt))  # keeps the list alive: ids stay unique
        rest = _dumps({k: v for k, v in row.items() if k != "prompt"})
        return '{"prompt":' + cached[1] + ("," + rest[1:] if len(rest) > 2 else "}")


def check_out(out: Path) -> None:
    """Refuse a target that cannot take this export, before any work: a folder where a .jsonl file should go, a
    file where a data set folder should go, or a folder of other things (never replaced)."""
    if is_jsonl(out):
        if out.is_dir():
            raise InputError("is a folder; a .jsonl export needs a file name", str(out))
        return
    if out.exists():
        if not out.is_dir():
            raise InputError("a file is in the way; give a folder name (or an OUT ending in .jsonl)", str(out))
        if any(out.iterdir()) and not _is_saved_dataset(out):
            raise InputError("folder exists and is not a saved data set; refusing to replace it", str(out))


def write_jsonl(out: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Stream rows to ``out`` as JSON Lines through a temporary file renamed into place. Returns the row count."""
    encode = RowEncoder()
    return write_lines(out, (encode(row) for row in rows))


def write_lines(out: Path, lines: Iterable[str]) -> int:
    """Write pre-encoded JSON lines to ``out`` (gzip when it ends in ``.gz``) atomically. Returns the line count."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(out)
    # os.open with 0o666 rather than mkstemp (0o600): the export gets the same permissions as any file the user makes
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    n = 0
    try:
        raw = os.fdopen(fd, "wb")
        stream = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if str(out).lower().endswith(".gz") else raw
        with raw, stream, io.TextIOWrapper(stream, encoding="utf-8", newline="\n") as f:
            write = f.write
            for line in lines:
                write(line)
                write("\n")
                n += 1
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def _temp_name(out: Path) -> Path:
    """A fresh hidden name beside ``out``, so the final rename stays on one file system."""
    return out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file()


def write_dataset(out: Path, rows: list[dict[str, Any]], features: Callable[[], Any]) -> int:
    """Save rows as a ``datasets`` folder at ``out`` (``features()`` builds the schema; called after ``datasets`` is
    imported). An existing folder is replaced only if it is itself a saved data set."""
    import datasets  # only here: the core stays importable without it (DESIGN.md)

    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(out)
    tmp.mkdir(0o777)  # umask applies, unlike mkdtemp's 0o700
    old: Path | None = None
    bars_were_off = datasets.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()  # callers (CLI, window) report progress their own way
    try:
        schema = features()
        ds = (
            datasets.Dataset.from_list(rows, features=schema) if rows
            else datasets.Dataset.from_dict({name: [] for name in schema}, features=schema)
        )
        # datasets writes no shard at all for 0 rows and then cannot load the folder: ask for one (empty) shard
        ds.save_to_disk(str(tmp), num_shards=1 if not rows else None)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            os.replace(old, out)
        raise
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return len(rows)
