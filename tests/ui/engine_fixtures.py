"""Shared pieces of the training-desk tests (Train, Runs, Evaluation pages, the engine thread): a project with
demonstrations and judged pairs, a Session on it, and a teardown that stops every engine thread and worker a
test started (no QThread or worker process may outlive its test)."""

from __future__ import annotations

from pathlib import Path

import pytest

import workbench.store
from workbench.store import Project

QUESTIONS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ("Name a prime number above ten.", "Eleven is a prime number above ten."),
    ("What do bees make?", "Bees make honey and wax."),
    ("How do you say hello in Spanish?", "You say hola."),
    ("What is two plus two?", "Two plus two is four."),
    ("Which planet is called the red planet?", "Mars is called the red planet."),
    ("What is water made of?", "Water is made of hydrogen and oxygen."),
    ("How many days are in a week?", "A week has seven days."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("What animal says moo?", "A cow says moo."),
]


def build_training_project(path: Path, *, demonstrations: int = len(QUESTIONS), pairs: int = 6, heldout: int = 4) -> Path:
    """Demonstrations on training prompts, judged pairs, and some held-out prompts for blind evaluation."""
    with Project.create(path) as p:
        for q, a in QUESTIONS[:demonstrations]:
            pid, _ = p.add_prompt([{"role": "user", "content": q}], source="test")
            p.add_demonstration(pid, a)
        for i in range(pairs):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Explain idea number {i} briefly."}], source="test")
            a, _ = p.add_response(pid, f"Idea {i} is explained clearly and briefly here.")
            b, _ = p.add_response(pid, f"idea {i}?? no")
            p.add_comparison(pid, a, b, verdict="a", strength="clear", left_side="a")
        for i in range(heldout):
            p.add_prompt([{"role": "user", "content": f"Held-out question {i}: what is {i} plus {i}?"}],
                         source="heldout", split="heldout")
    return path


@pytest.fixture
def training_project_path(tmp_path: Path) -> Path:
    return build_training_project(tmp_path / "train.wbp")


@pytest.fixture
def session(qtbot, tmp_path, training_project_path):
    """A Session on the training project; every engine thread it started is stopped at teardown."""
    from ui.prefs import Prefs
    from ui.session import Session

    project = Project.open(training_project_path)
    s = Session(project, Prefs(tmp_path / "prefs.ini"))
    yield s
    mgr = getattr(s, "_run_manager", None)
    if mgr is not None:
        mgr.shutdown()
        assert not mgr.live_jobs(), "an engine thread outlived its test"
        qtbot.wait(50)  # deliver the last queued signals while the project is still open
    project.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama chat model folder (tests/tiny_models.py), built once per test session."""
    from tests.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")
