"""What an import or export did: counts of rows added or written, and rows skipped with the reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportReport:
    """Filled in by an importer: ``added`` counts new rows by table, ``skipped`` counts valid but redundant
    records by reason (e.g. "identical chosen and rejected", "duplicate of a comparison already in the project")."""

    path: str
    format: str
    records: int = 0
    added: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def add(self, what: str, n: int = 1) -> None:
        self.added[what] += n

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "records": self.records,
            "added": dict(self.added),
            "skipped": dict(self.skipped),
            "skipped_total": sum(self.skipped.values()),
        }

    def summary(self) -> str:
        added = ", ".join(f"{n} {k}" for k, n in sorted(self.added.items())) or "nothing new"
        text = f"{self.path} ({self.format}): {self.records} records read; added {added}"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} ({reason})" for reason, n in sorted(self.skipped.items()))
        return text


@dataclass
class ExportReport:
    """Filled in by an exporter: where it wrote, how many rows, the snapshot it recorded, and what it left out."""

    out: str
    format: str
    rows: int = 0
    snapshot_id: int | None = None
    left_out: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "format": self.format,
            "rows": self.rows,
            "snapshot_id": self.snapshot_id,
            "left_out": dict(self.left_out),
        }

    def summary(self) -> str:
        text = f"wrote {self.rows} rows ({self.format}) to {self.out}"
        if self.snapshot_id is not None:
            text += f"; snapshot {self.snapshot_id}"
        if self.left_out:
            text += "; left out " + ", ".join(f"{n} ({why})" for why, n in sorted(self.left_out.items()))
        return text
