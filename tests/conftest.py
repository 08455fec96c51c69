"""Fixtures shared by every test package: a fresh project file and the real public data beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.paths import shared_real_data
from workbench.store import Project

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def project_path(tmp_path: Path) -> Path:
    return tmp_path / "test.wbp"


@pytest.fixture
def project(project_path: Path):
    p = Project.create(project_path)
    yield p
    p.close()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (CI always has it); a test that needs it says so plainly when it is absent."""
    root = shared_real_data()
    if not root.is_dir():
        pytest.skip(f"needs the real public data sets at {root} (the shared/ folder beside the repository), absent here")
    return root
