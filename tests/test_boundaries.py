"""The package boundaries of DESIGN.md: import-linter contracts, and what a process really loads."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


def test_core_and_cli_load_neither_qt_nor_torch() -> None:
    code = (
        "import sys, workbench.cli, workbench.store, workbench.importers, workbench.exporters, workbench.training_data;"
        "workbench.cli.build_parser();"
        "bad = [m for m in ('torch', 'transformers', 'peft', 'PySide6', 'pyqtgraph', 'engine', 'ui') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


# The store (and the schema it migrates with) is the only place that speaks SQL or holds the connection.
SQL_CALLS = re.compile(r"\.execute\(|executemany\(|executescript\(")
CONNECTION = re.compile(r"\.conn\b")
PACKAGES = ("workbench", "engine", "ui")


def _outside_the_store() -> list[Path]:
    store = ROOT / "workbench" / "store"
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return [p for p in files if store not in p.parents and p != ROOT / "workbench" / "schema.py"]


def _offences(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in _outside_the_store():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_only_the_store_executes_sql() -> None:
    assert len(_outside_the_store()) > 50  # the scan sees the packages (a moved root would pass vacuously)
    assert _offences(SQL_CALLS) == []


def test_only_the_store_touches_the_connection() -> None:
    assert _offences(CONNECTION) == []


def test_the_sql_scan_catches_a_query() -> None:
    sample = 'rows = project.conn.execute("SELECT 1").fetchall()\nconn.executemany("INSERT", rows)\n'
    assert len([ln for ln in sample.splitlines() if SQL_CALLS.search(ln)]) == 2
    assert CONNECTION.search(sample)
