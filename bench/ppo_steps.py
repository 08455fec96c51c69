"""Every step of a PPO run as a table, read from a project's metric table: the companion of ``bench_ppo_quality``
for watching a run live.

    python -m bench.ppo_steps PROJECT.wbp [--run ID] [--every 10]

Prints per step the rollout's score mean and its spread among the responses to one prompt, the KL per response, the KL coefficient, the update's approximate KL,
clip fraction and entropy, the response length, and the step and rollout seconds; with ``--every N`` it prints the
means over blocks of N steps instead. The latest run is shown unless ``--run`` names one. Opening the project
while the worker writes is safe (SQLite in WAL mode, read only here).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLUMNS = {
    "score": "rollout/score_mean",
    "within_sd": "rollout/score_std_within_prompt",
    "kl": "rollout/kl",
    "kl_coef": "rollout/kl_coef",
    "approx_kl": "ppo/approx_kl",
    "clip_frac": "ppo/clip_frac",
    "entropy": "rollout/entropy",
    "resp_len": "rollout/response_length",
    "step_s": "perf/step_s",
    "rollout_s": "perf/rollout_s",
}


def step_table(project_path: Path, run_id: int | None = None) -> tuple[int, dict[int, dict[str, float]]]:
    """The run's id and, per step, the value of each of ``COLUMNS`` (NaN where the run did not log it)."""
    from workbench.store import Project

    with Project.open(project_path, migrate=False) as project:
        runs = [r for r in project.runs() if r.get("stage") == "ppo"]
        if not runs:
            raise SystemExit(f"{project_path}: no PPO run in this project")
        if run_id is None:
            run_id = runs[-1]["id"]
        elif run_id not in {r["id"] for r in runs}:
            raise SystemExit(f"{project_path}: run {run_id} is not a PPO run (PPO runs: {[r['id'] for r in runs]})")
        rows = project.metrics(run_id)
    wanted = {key: name for name, key in COLUMNS.items()}
    table: dict[int, dict[str, float]] = {}
    for step, key, value in rows:
        if key in wanted and value is not None:
            table.setdefault(step, {})[wanted[key]] = value
    return run_id, table


def blocks(table: dict[int, dict[str, float]], every: int) -> dict[str, dict[str, float]]:
    """Means of each column over steps 1..N, N+1..2N, …, keyed by the step range."""
    out: dict[str, dict[str, float]] = {}
    for first in range(1, max(table, default=0) + 1, every):
        steps = [s for s in range(first, first + every) if s in table]
        if not steps:
            continue
        label = f"{steps[0]}-{steps[-1]}"
        out[label] = {}
        for name in COLUMNS:
            vals = [table[s][name] for s in steps if name in table[s]]
            out[label][name] = sum(vals) / len(vals) if vals else math.nan
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", type=Path, help="the project file (.wbp) the PPO run writes to")
    ap.add_argument("--run", type=int, help="run id (default: the project's latest PPO run)")
    ap.add_argument("--every", type=int, default=0, help="print means over blocks of this many steps")
    args = ap.parse_args(argv)
    if not args.project.exists():
        raise SystemExit(f"{args.project}: no such project file")
    run_id, table = step_table(args.project, args.run)
    rows = blocks(table, args.every) if args.every > 0 else {str(s): table[s] for s in sorted(table)}
    print(f"# run {run_id}: " + " ".join(COLUMNS))
    print(f"{'step':>8} " + " ".join(f"{name:>10}" for name in COLUMNS))
    for label, values in rows.items():
        print(f"{label:>8} " + " ".join(f"{values.get(name, math.nan):10.4f}" for name in COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
