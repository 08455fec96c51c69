"""Helpers for the importer tests: the real sample files in ``tests/data`` and how to read them independently of the
importer, writing small input files, and fingerprinting a closed project file."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from workbench.store import Project

# Samples of the four HH-RLHF test splits, at their original paths below tests/data.
HH_FILES = {
    "harmless-base": "anthropic-hh-rlhf/harmless-base/test.jsonl.gz",
    "helpful-base": "anthropic-hh-rlhf/helpful-base/test.jsonl.gz",
    "helpful-online": "anthropic-hh-rlhf-via-easyrlhf/helpful-online/test.jsonl.gz",
    "helpful-rejection-sampled": "anthropic-hh-rlhf-via-easyrlhf/helpful-rejection-sampled/test.jsonl.gz",
}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON Lines file, gzip-compressed or not: the tests' own reading, not the importer's."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def hh_identical(rows: list[dict[str, str]]) -> int:
    """HH-RLHF records whose chosen and rejected transcripts are the same (the importer skips them)."""
    return sum(r["chosen"] == r["rejected"] for r in rows)


def write_jsonl(path: Path, rows: list[Any], *, gz: bool = False) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def fingerprint(project_path: Path) -> str:
    """SHA-256 over the project file and any WAL side file (call with the project closed)."""
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        p = Path(str(project_path) + suffix)
        h.update(suffix.encode())
        h.update(p.read_bytes() if p.exists() else b"<absent>")
    return h.hexdigest()


def count(project: Project, sql: str, *args: Any) -> int:
    return project.conn.execute(sql, args).fetchone()[0]


def hh(*turns: str) -> str:
    """An HH transcript from alternating turns, starting with the human."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))
