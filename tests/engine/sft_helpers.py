"""Shared pieces of the SFT and worker tests: a project with demonstrations (the tiny model is the
``tiny_model_dir`` fixture of tests/engine/conftest.py)."""

from __future__ import annotations

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


def add_demonstrations(project: Project, n: int | None = None) -> list[int]:
    """Add ``n`` single-turn demonstrations (all of QUESTIONS by default) plus one multi-turn one; returns ids."""
    ids = []
    for q, a in QUESTIONS[: n if n is not None else len(QUESTIONS)]:
        pid, _ = project.add_prompt([{"role": "user", "content": q}], source="test")
        did, _, _ = project.add_demonstration(pid, a)
        ids.append(did)
    if n is None:
        pid, _ = project.add_prompt(
            [
                {"role": "user", "content": "Tell me about cats."},
                {"role": "assistant", "content": "Cats are small carnivorous mammals."},
                {"role": "user", "content": "And dogs?"},
            ],
            source="test",
        )
        did, _, _ = project.add_demonstration(pid, "Dogs are loyal domesticated mammals.")
        ids.append(did)
    return ids
