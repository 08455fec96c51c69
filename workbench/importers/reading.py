"""Reading an input file into records: JSON Lines, a JSON array or CSV, optionally gzip-compressed.

Every record keeps where it came from (JSONL line number, CSV row number counting the header as row 1, or JSON
array index), so any later error can name the exact place. Structural problems found while reading (bad gzip,
non-UTF-8 bytes, malformed JSON, a row with the wrong number of fields, an empty file, an oversized record) raise
:class:`~workbench.errors.InputError` here, before anything touches the project.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
# A record (one JSON line or CSV row) may hold several messages, but not without bound: four message caps.
RECORD_CAP_FACTOR = 4


@dataclass(frozen=True)
class Record:
    """One input record: ``line`` is the JSONL line, the CSV row (header = 1) or the JSON array index."""

    line: int
    data: dict[str, Any]


@dataclass
class LoadedFile:
    path: Path
    container: str  # "jsonl" | "json" | "csv"
    records: list[Record]
    header: list[str] | None = None  # CSV only


def base_suffix(path: Path) -> str:
    """The extension that says the container (``.jsonl`` for ``x.jsonl.gz``), lower case."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when they are gzip (recognised by content, not by name)."""
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a folder, not a data file", str(path))
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"not a readable gzip file ({e})", str(path)) from e
    elif path.suffix.lower() == ".gz":
        raise InputError("named .gz but not gzip-compressed", str(path))
    return raw


def decode(raw: bytes, path: Path) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(
            f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {col} cannot be decoded", str(path), line
        ) from e
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise InputError("the file is empty (no records)", str(path))
    return text


def container_of(path: Path, text: str) -> str:
    """Which container the file is: by extension, else by its first non-blank character."""
    suffix = base_suffix(path)
    first = text.lstrip()[:1]
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".json":
        # Many ".json" files are really JSON Lines; an array starts with '['.
        return "json" if first == "[" else "jsonl"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if first == "[":
        return "json"
    if first == "{":
        return "jsonl"
    return "csv"


def _oversized(value: Any, max_chars: int, where: str) -> tuple[str, int] | None:
    """The first text inside ``value`` (walking objects and lists) longer than the cap: (field path, length)."""
    if isinstance(value, str):
        return (where, len(value)) if len(value) > max_chars else None
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, v in items:
        found = _oversized(v, max_chars, path)
        if found:
            return found
    return None


def _lone_surrogate(value: Any, where: str) -> str | None:
    """The field path of the first text holding an unpaired UTF-16 surrogate (a JSON ``\\udXXX`` escape without
    its pair): such text cannot be stored as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, v in items:
        found = _lone_surrogate(v, path)
        if found:
            return found
    return None


def _check_surrogates(data: dict[str, Any], path: Path, line: int) -> None:
    field = _lone_surrogate(data, "")
    if field:
        raise InputError("text holds an unpaired \\ud800-\\udfff escape, which is not valid Unicode", str(path), line, field)


def _check_record_size(data: dict[str, Any], size: int, path: Path, line: int, max_chars: int) -> None:
    """Refuse an oversized record: a text over the message cap anywhere in it (named by its field path), or a
    record over the record cap as a whole (named by its largest field)."""
    found = _oversized(data, max_chars, "")
    if found:
        field, length = found
        raise InputError(f"text of {length:,} characters is over the size cap of {max_chars:,}", str(path), line, field)
    cap = RECORD_CAP_FACTOR * max_chars
    if size > cap:
        biggest = max(data, key=lambda k: len(json.dumps(data[k], ensure_ascii=False)), default=None)
        raise InputError(
            f"record of {size:,} characters is over the record cap of {cap:,} ({RECORD_CAP_FACTOR} × the message cap)",
            str(path), line, biggest,
        )


def parse_json(text: str, path: Path, line: int | None) -> Any:
    """``json.loads`` with every way it can fail turned into an InputError naming the file and line: malformed text,
    nesting deeper than Python's recursion allows, and integers longer than Python converts (4,300 digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON: {e.msg} (column {e.colno})", str(path),
                         line if line is not None else e.lineno) from None
    except RecursionError:
        raise InputError("malformed JSON: nested too deeply", str(path), line) from None
    except ValueError as e:  # an integer of more digits than int() accepts
        raise InputError(f"malformed JSON: {str(e).split(';')[0]}", str(path), line) from None


def _read_jsonl(text: str, path: Path, max_chars: int) -> list[Record]:
    records = []
    # split("\n") and not splitlines(): JSON strings may hold raw U+2028 and similar, which are not line ends.
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue
        data = parse_json(line, path, number)  # tolerates surrounding whitespace and a trailing "\r"
        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object on each line, got {type(data).__name__}", str(path), number)
        if len(line) > max_chars:
            _check_record_size(data, len(line), path, number, max_chars)
        if "\\u" in line and ("\\ud" in line or "\\uD" in line):
            _check_surrogates(data, path, number)
        records.append(Record(number, data))
    return records


def _read_json_array(text: str, path: Path, max_chars: int) -> list[Record]:
    value = parse_json(text, path, None)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise InputError(f"expected a JSON array of objects, got {type(value).__name__}", str(path))
    if not value:
        raise InputError("the file is empty (the JSON array has no records)", str(path))
    records = []
    maybe_surrogates = "\\ud" in text or "\\uD" in text
    for index, data in enumerate(value):
        if not isinstance(data, dict):
            raise InputError(f"expected an object, got {type(data).__name__} (JSON array item [{index}])", str(path), index)
        size = sum(len(v) for v in data.values() if isinstance(v, str))
        if size > max_chars or any(not isinstance(v, (str, int, float, bool, type(None))) for v in data.values()):
            _check_record_size(data, len(json.dumps(data, ensure_ascii=False)), path, index, max_chars)
        if maybe_surrogates:
            _check_surrogates(data, path, index)
        records.append(Record(index, data))
    return records


def _read_csv(text: str, path: Path, max_chars: int) -> tuple[list[str], list[Record]]:
    # The csv module's default field limit (128 KiB) is below our message cap, and its error names no column:
    # lift it (the whole file is in memory already) and let our own cap name the field.
    csv.field_size_limit(2**31 - 1)
    delimiter = "\t" if base_suffix(path) == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    records: list[Record] = []
    row_number = 0
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            row_number += 1
            if header is None:
                header = [h.strip() for h in row]
                dupes = {h for h in header if header.count(h) > 1}
                if dupes:
                    raise InputError(f"the header names column {sorted(dupes)[0]!r} twice", str(path), 1, sorted(dupes)[0])
                if any(not h for h in header):
                    raise InputError("the header has an empty column name", str(path), 1)
                continue
            if len(row) != len(header):
                raise InputError(
                    f"row has {len(row)} fields but the header has {len(header)} ({', '.join(header)})"
                    f" (CSV row {row_number}, counting the header as row 1)",
                    str(path), row_number,
                    header[len(row)] if len(row) < len(header) else None,
                )
            data = dict(zip(header, row))
            size = sum(len(v) for v in row)
            if size > max_chars:
                _check_record_size(data, size, path, row_number, max_chars)
            records.append(Record(row_number, data))
    except csv.Error as e:
        raise InputError(f"malformed CSV: {e}", str(path), row_number + 1) from e
    if header is None:
        raise InputError("the file is empty (no header row)", str(path))
    if not records:
        raise InputError("the file has a header row but no records", str(path), 1)
    return header, records


def load(path: str | Path, *, max_chars: int) -> LoadedFile:
    """Read and parse the whole file; raises InputError naming the file and line for anything malformed."""
    p = Path(path)
    text = decode(read_bytes(p), p)
    container = container_of(p, text)
    if container == "csv":
        header, records = _read_csv(text, p, max_chars)
        return LoadedFile(p, "csv", records, header)
    if container == "json":
        return LoadedFile(p, "json", _read_json_array(text, p, max_chars))
    records = _read_jsonl(text, p, max_chars)
    if not records:
        raise InputError("the file is empty (no records)", str(p))
    return LoadedFile(p, "jsonl", records)


def first_json_object(path: str | Path) -> dict[str, Any] | None:
    """The first line of a JSON Lines file parsed as an object, or None: a cheap peek used to recognise the
    project exchange format without reading the whole file."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == GZIP_MAGIC else open
        with opener(p, "rb") as f:  # type: ignore[operator]
            for raw in f:
                line = raw.strip()
                if line:
                    value = json.loads(line.decode("utf-8-sig"))
                    return value if isinstance(value, dict) else None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return None
