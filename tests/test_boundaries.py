"""The package boundaries of DESIGN.md: import-linter contracts, and what a process really loads."""

from __future__ import annotations

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
