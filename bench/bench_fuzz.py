"""Fuzzed parsers: how many cases each importer, format detection and each run-config loader ran, and how many ended
in anything but an import or the clean one-line error (goal: 0).

The cases are the property tests' own (``tests/workbench/fuzz_cases.py``: arbitrary bytes, arbitrary JSON, deep
nesting, huge numbers, wrong values in every field of each format's records, mutated project exchange files,
arbitrary YAML and wrong types in every config field), drawn many more times here, each import into one real
project file that is compared before and after a failed import.

    python -m bench.bench_fuzz [--cases 2000] [--only "import trl"]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from bench.machine import describe
from tests.workbench.fuzz_cases import parser_cases, project_exchange_lines
from workbench.store import Project


def run_parser(name: str, strategy, cases: int, folder: Path, project: Project) -> dict:
    counts = {"cases": 0, "imported": 0, "clean_error": 0, "other": 0}
    examples: list[str] = []
    numbers = itertools.count()

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        counts["cases"] += 1
        try:
            outcome = case.run(folder, project, next(numbers))
        except Exception as e:  # counted, not raised: the figure is how many
            counts["other"] += 1
            if len(examples) < 3:
                examples.append(f"{type(e).__name__}: {str(e)[:300]}\n{traceback.format_exc(limit=3)[-600:]}")
            return
        counts["imported" if outcome.imported else "clean_error"] += 1

    run()
    return {"parser": name, **counts, "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000, help="cases per parser (default 2000)")
    ap.add_argument("--only", help="one parser, e.g. 'import trl' or 'config sft'")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="wb-bench-fuzz-"))
    strategies = parser_cases(project_exchange_lines(folder))
    names = [args.only] if args.only else sorted(strategies)
    print(f"machine: {describe()}")
    print(f"{'parser':<22} {'cases':>7} {'imported':>9} {'clean error':>12} {'other':>6}")
    total_other = total = 0
    t0 = time.perf_counter()
    with Project.create(folder / "target.wbp") as project:
        pid, _ = project.add_prompt([{"role": "user", "content": "Already here."}], source="seed")
        project.add_response(pid, "An answer.")
        for name in names:
            r = run_parser(name, strategies[name], args.cases, folder, project)
            total += r["cases"]
            total_other += r["other"]
            print(f"{name:<22} {r['cases']:>7} {r['imported']:>9} {r['clean_error']:>12} {r['other']:>6}", flush=True)
            for ex in r["examples"]:
                print("    " + ex.replace("\n", "\n    "))
    print(f"total: {total:,} cases, {total_other} ended in anything but an import or the clean error "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
