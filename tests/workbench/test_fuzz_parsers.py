"""Property-based tests of every importer, format detection and the run-config loader (hypothesis): arbitrary bytes,
arbitrary JSON, deep nesting, huge numbers and wrong types in every field of each format's records. Each case
imports, or fails with the one-line error naming the file (line and field where there is one) and leaves the
project unchanged; never another exception (``fuzz_cases.import_case`` raises for anything else).

``bench/bench_fuzz.py`` runs the same cases in larger numbers and counts the outcomes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from workbench.configs import CONFIG_CLASSES
from workbench.store import Project

from .fuzz_cases import FORMATS, config_case, import_case, parser_cases, project_exchange_lines

_numbers = itertools.count()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def target(fuzz_dir: Path):
    """One project every case imports into (each case compares it before and after)."""
    with Project.create(fuzz_dir / "target.wbp") as p:
        pid, _ = p.add_prompt([{"role": "user", "content": "Already here."}], source="seed")
        p.add_response(pid, "An answer.")
        yield p


CASES = parser_cases(project_exchange_lines(Path(__import__("tempfile").mkdtemp(prefix="wb-fuzz-exchange-"))))


@pytest.mark.parametrize("parser", sorted(CASES))
def test_every_case_imports_or_fails_cleanly(parser, target, fuzz_dir):
    @settings(max_examples=80, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(case=CASES[parser])
    def run(case):
        case.run(fuzz_dir, target, next(_numbers))

    run()


def test_a_file_nested_100000_deep_is_a_clean_error(target, fuzz_dir):
    for suffix in (".jsonl", ".json", ".csv"):
        path = fuzz_dir / f"deep{suffix}"
        path.write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
        for fmt in FORMATS:
            outcome = import_case(target, path, fmt)
            assert not outcome.imported and str(path) in outcome.message


def test_an_integer_of_5000_digits_is_a_clean_error_naming_the_line(target, fuzz_dir):
    path = fuzz_dir / "huge.jsonl"
    path.write_text('{"prompt": "x", "completion": "y"}\n{"prompt": ' + "9" * 5000 + "}\n", encoding="utf-8")
    outcome = import_case(target, path, "trl")
    assert not outcome.imported and f"{path}:line 2" in outcome.message


def test_a_key_with_a_newline_keeps_the_error_on_one_line(target, fuzz_dir):
    path = fuzz_dir / "newline-key.jsonl"
    path.write_text('{"\\n\\u202e": 1}\n', encoding="utf-8")
    outcome = import_case(target, path, "auto")
    assert not outcome.imported and "\\n" in outcome.message and "\\u202e" in outcome.message


@pytest.mark.parametrize("text", ["[" * 100_000, "a: " + "[" * 100_000, "lr: .nan", "lr: .inf", "max_steps: 1e999",
                                  "seed: " + "9" * 5000, "\x00", "a: *b"])
def test_config_edge_cases(fuzz_dir, text):
    for stage in CONFIG_CLASSES:
        outcome = config_case(stage, text, str(fuzz_dir / "config.yaml"))
        assert not outcome.imported


def test_a_nan_learning_rate_is_refused_naming_the_field(fuzz_dir):
    outcome = config_case("sft", "lr: .nan\n", str(fuzz_dir / "config.yaml"))
    assert not outcome.imported and "'lr'" in outcome.message
