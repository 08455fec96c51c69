"""Fixtures shared by every test package: a fresh project file and the real public records in ``tests/data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.store import Project

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def project_path(tmp_path: Path) -> Path:
    return tmp_path / "test.wbp"


@pytest.fixture
def project(project_path: Path):
    p = Project.create(project_path)
    yield p
    p.close()


@pytest.fixture(scope="session")
def test_data() -> Path:
    """``tests/data``: samples of real public data sets, each folder with its source, licence and counts."""
    return TEST_DATA
