"""Fixtures for the window's tests: a small project with real pending comparisons, isolated preferences, and a
main window (or a single page) that pytest-qt closes and deletes after each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.store import Project


def build_small_project(path: Path, n: int = 6) -> Path:
    """n prompts, three responses each, one pending comparison per prompt; prompt 1 tagged red-team."""
    p = Project.create(path)
    try:
        for i in range(n):
            pid, _ = p.add_prompt(
                [{"role": "user", "content": f"Question {i}: how do I do task {i}?"}],
                source="alpha" if i % 2 == 0 else "beta",
                tags=["red-team"] if i == 1 else (["math"] if i % 3 == 0 else []),
            )
            a, _ = p.add_response(pid, f"Response A to question {i}.\n\n- step one\n- step two")
            b, _ = p.add_response(pid, f"Response B to question {i}: *short*.")
            p.add_response(pid, f"Response C to question {i}, a third candidate.")
            p.add_comparison(pid, a, b, source="alpha" if i % 2 == 0 else "beta")
    finally:
        p.close()
    return path


@pytest.fixture
def small_project_path(tmp_path: Path) -> Path:
    return build_small_project(tmp_path / "small.wbp")


@pytest.fixture
def prefs(tmp_path: Path):
    from ui.prefs import Prefs

    return Prefs(tmp_path / "prefs.ini")


@pytest.fixture
def window(qtbot, prefs, small_project_path):
    from ui.main_window import MainWindow

    w = MainWindow(prefs)
    qtbot.addWidget(w)
    w.show()
    w.open_project(small_project_path)
    yield w
    w.close()


@pytest.fixture
def db(small_project_path):
    """A second connection to the project file, to check what the window committed."""
    p = Project.open(small_project_path)
    yield p
    p.close()
