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


def test_every_page_module_is_under_ui_pages() -> None:
    """The window's pages live in ``ui/pages/`` (the sidebar table names them there); no module outside defines one."""
    table = (ROOT / "ui" / "main_window.py").read_text(encoding="utf-8")
    modules = re.findall(r'\(\s*"\w+",\s*"[^"]+",\s*"([\w.]+)",\s*"\w+Page"\s*\)', table)
    assert len(modules) >= 11 and all(m.startswith("ui.pages.") for m in modules), modules
    for m in modules:
        assert (ROOT / Path(*m.split("."))).with_suffix(".py").is_file(), m
    page_class = re.compile(r"^class \w+\((\w+, )*Page\)", re.M)
    loose = [p.name for p in (ROOT / "ui").glob("*.py") if page_class.search(p.read_text(encoding="utf-8"))]
    assert loose == []


def test_developer_tools_are_not_shipped() -> None:
    """The screenshot tools live in ``tools/``, which the package build leaves out (they may import ``ui``)."""
    assert sorted(p.name for p in (ROOT / "tools").glob("*screenshot*.py")) == [
        "evaluation_screenshot.py", "loop_screenshots.py", "screenshots.py", "training_screenshots.py"]
    assert not list((ROOT / "ui").glob("*screenshot*.py"))
    include = re.search(r"\[tool\.setuptools\.packages\.find\]\s*include = \[([^\]]*)\]",
                        (ROOT / "pyproject.toml").read_text(encoding="utf-8")).group(1)
    assert "tools" not in include
