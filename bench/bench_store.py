"""The project file's figures: HH-RLHF import time, open + stats, next-item fetch p99, judge-and-commit p99,
and exporting 100k pairs as TRL JSONL, on a synthetic project of 1,000,000 comparisons.

    .venv/bin/python -m bench.bench_store [--comparisons N]

Absolute figures (no peer does this job in a desktop store); targets: import < 2 s, open + stats < 1 s,
next item < 5 ms p99, export of 100k pairs < 3 s.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import describe
from bench.synthetic import OUT, build
from bench.real_data import real_data_dir
from workbench.store import Project, copy_project

HH_FILES = (
    "anthropic-hh-rlhf/harmless-base/test.jsonl.gz",
    "anthropic-hh-rlhf/helpful-base/test.jsonl.gz",
    "anthropic-hh-rlhf-via-easyrlhf/helpful-online/test.jsonl.gz",
    "anthropic-hh-rlhf-via-easyrlhf/helpful-rejection-sampled/test.jsonl.gz",
)


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[98]


def bench_import(tmp: Path) -> None:
    from workbench.importers import import_file

    root = real_data_dir()
    path = tmp / "hh.wbp"
    project = Project.create(path)
    pairs = 0
    t0 = time.perf_counter()
    for rel in HH_FILES:
        report = import_file(project, root / rel)
        pairs += report.added.get("comparisons", 0)
    dt = time.perf_counter() - t0
    project.close()
    print(f"import 4 HH-RLHF test files: {pairs:,} pairs in {dt:.2f} s (target < 2 s)")


def bench_open_stats(path: Path) -> None:
    # A fresh process each time, as a user would start `workbench stats`; the figure is measured inside it.
    code = (
        "import time; t=time.perf_counter(); from workbench.store import Project; "
        f"p=Project.open({str(path)!r}); s=p.stats(); print(time.perf_counter()-t, s['comparisons'])"
    )
    times = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
    print(f"open + stats on {int(out[1]):,} comparisons: median {statistics.median(times) * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms (target < 1 s)")


def bench_next_item(path: Path, n: int = 3000) -> None:
    project = Project.open(path)
    rng = random.Random(1)
    fetch, cycle = [], []
    after = 0
    for i in range(n):
        t0 = time.perf_counter()
        item = project.next_pending(after)
        prompt = project.get_prompt(item.prompt_id)
        ra, rb = project.get_response(item.response_a), project.get_response(item.response_b)
        t1 = time.perf_counter()
        project.judge(item.id, rng.choice("ab"), strength="clear", left_side=rng.choice("ab"), time_spent_ms=900)
        t2 = time.perf_counter()
        fetch.append((t1 - t0) * 1000)
        cycle.append((t2 - t0) * 1000)
        after = item.id
        assert prompt.messages and ra.content and rb.content
    project.close()
    print(f"next item (query + prompt + 2 responses), {n} items: p50 {statistics.median(fetch):.3f} ms, "
          f"p99 {p99(fetch):.3f} ms (target < 5 ms)")
    print(f"next item + judge + commit: p50 {statistics.median(cycle):.3f} ms, p99 {p99(cycle):.3f} ms")


def bench_export(path: Path, tmp: Path) -> None:
    from workbench.exporters import export

    project = Project.open(path)
    out = tmp / "pairs.jsonl"
    t0 = time.perf_counter()
    report = export(project, out, "trl-preference", include_ties=False)
    dt = time.perf_counter() - t0
    project.close()
    print(f"export {report.rows:,} pairs as TRL JSONL (with snapshot): {dt:.2f} s (target: 100,000 pairs < 3 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comparisons", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    src = build(OUT / f"synthetic-{args.comparisons}.wbp", args.comparisons)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        work = tmp / "work.wbp"
        copy_project(src, work)
        bench_import(tmp)
        bench_open_stats(work)
        bench_next_item(work)
        # The export works on a project whose 100,000 judgments are all A/B verdicts: exactly 100,000 pairs.
        pairs_only = build(OUT / f"synthetic-{args.comparisons}-ab.wbp", args.comparisons, verdicts=("a", "b"))
        copy_project(pairs_only, tmp / "export.wbp")
        bench_export(tmp / "export.wbp", tmp)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
