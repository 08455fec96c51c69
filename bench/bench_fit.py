"""Will it fit, checked: the memory estimate of ``workbench.fit`` against the measured peak of real runs.

    python -m bench.bench_fit [--rows sft,sft-gc,rm,dpo,ppo] [--steps 2] [--threads 2] [--set KEY=VALUE ...]

For each row, a run of the bundled SmolLM2 on the CPU with the stage's default settings (``sft-gc``: SFT with
gradient checkpointing, the one default-off stage where it changes the estimate most), ``--steps`` optimizer steps,
started through ``workbench.jobs.JobClient`` exactly as ``workbench train`` starts it; the measured figure is the
worker process's peak resident size (its ``ru_maxrss``, which the worker reports as ``peak_mem_mb``), the estimate
is :func:`workbench.fit.estimate` of the same config. Prints a table with the ratio estimate / measured; the target is
within 25 %. ``--set`` changes a setting of every row (for calibration runs away from the defaults).

Data: the estimate is a worst case, every example at ``max_length``, so the runs get examples that reach it:
real text from HH-RLHF (helpful-base, test split; ``bench/real_data.py`` finds it), a short question with a long
reply (several HH conversations joined) for SFT, the reward model and DPO (whose two replies are both long), and
long prompts (an HH conversation to continue) for PPO, whose reward model is the ``rm`` row's adapter (or, without
that row, one trained for a step first and not reported).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HH_FILE = "anthropic-hh-rlhf/helpful-base/test.jsonl.gz"
ROWS = {
    "sft": ("sft", {}),
    "sft-gc": ("sft", {"gradient_checkpointing": True}),
    "rm": ("rm", {}),
    "dpo": ("dpo", {}),
    "ppo": ("ppo", {}),
}
TARGET = 0.25


def _hh_texts(n: int) -> list[str]:
    from bench.real_data import real_data_dir

    out: list[str] = []
    with gzip.open(real_data_dir() / HH_FILE, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.extend([row["chosen"].strip(), row["rejected"].strip()])
            if len(out) >= n:
                break
    return out


def _long(texts: list[str], start: int, chars: int) -> str:
    """Consecutive HH texts from ``start`` joined until ``chars`` characters."""
    parts, i = [], start
    while sum(len(p) for p in parts) < chars:
        parts.append(texts[i % len(texts)])
        i += 1
    return "\n\n".join(parts)


def build_projects(workdir: Path, examples: int) -> tuple[Path, Path]:
    """(the project for SFT, the reward model and DPO; the one for PPO), both with ``examples`` items."""
    from workbench.store import Project

    texts = _hh_texts(8 * examples + 64)
    main, ppo = workdir / "fit.wbp", workdir / "fit-ppo.wbp"
    with Project.create(main) as p:
        for i in range(examples):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Tell me everything you know, example {i}."}])
            a, _ = p.add_response(pid, _long(texts, 8 * i, 4000))
            b, _ = p.add_response(pid, _long(texts, 8 * i + 4, 4000))
            p.add_demonstration(pid, _long(texts, 8 * i + 2, 4000))
            p.add_comparison(pid, a, b, verdict="a", strength="clear", left_side="a")
    with Project.create(ppo) as p:
        for i in range(examples):
            context = _long(texts, 8 * i + 1, 3000)
            p.add_prompt([{"role": "user", "content": f"{context}\n\nContinue this conversation at length, in detail."}])
    return main, ppo


def run_row(project: Path, stage: str, cfg: Any) -> dict[str, Any]:
    """Run one config through the job client and a worker process; its summary (peak_mem_mb) or an error."""
    from workbench.jobs import JobClient

    t0 = time.perf_counter()
    handle = JobClient(project).start(stage, cfg)
    status = handle.wait()
    summary = dict((handle.final or {}).get("summary") or {})
    summary.update(status=status, error=handle.error, wall_s=round(time.perf_counter() - t0, 1),
                   output=(handle.final or {}).get("output"))
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, of {', '.join(ROWS)}")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per run (default 2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each run")
    ap.add_argument("--examples", type=int, default=24, help="items in each scratch project (default 24)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a setting of every row (YAML value), for calibration away from the defaults")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    args = ap.parse_args(argv)

    import yaml

    from bench.machine import describe
    from workbench.configs import config_class
    from workbench.fit import estimate

    changes = {}
    for item in args.set:
        key, _, value = item.partition("=")
        changes[key.strip()] = yaml.safe_load(value)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")

    # memory, not speed, is measured: the worker need not yield to other work on a shared machine
    os.environ.setdefault("RLHF_WORKBENCH_WORKER_NICE", "0")
    work = Path(tempfile.mkdtemp(prefix="bench-fit-"))
    main_project, ppo_project = build_projects(work, args.examples)
    results: list[dict[str, Any]] = []
    reward_model: str | None = None
    if "ppo" in rows and "rm" not in rows:
        cfg = config_class("rm")(device="cpu", max_steps=1, num_threads=args.threads, checkpoint_every=0)
        reward_model = run_row(main_project, "rm", cfg.replace(**changes)).get("output")
    for row in rows:
        stage, own = ROWS[row]
        extra: dict[str, Any] = {"device": "cpu", "max_steps": args.steps, "num_threads": args.threads,
                                 "checkpoint_every": 0, **own, **changes}
        if stage == "ppo":
            extra["reward_model"] = reward_model
        cfg = config_class(stage)().replace(**extra)
        est = estimate(stage, cfg)
        got = run_row(ppo_project if stage == "ppo" else main_project, stage, cfg)
        if stage == "rm" and got.get("output"):
            reward_model = got["output"]
        measured = got.get("peak_mem_mb")
        ratio = est.estimate_mb / measured if est is not None and measured else None
        results.append({"row": row, "settings": {k: v for k, v in {**own, **changes}.items()},
                        "estimate_mb": est.estimate_mb if est else None, "parts_mb": est.to_dict()["parts_mb"] if est else {},
                        "measured_mb": measured, "ratio": round(ratio, 3) if ratio else None, "status": got["status"],
                        "error": got.get("error"), "wall_s": got["wall_s"], "steps": got.get("steps")})
        print(f"{row}: estimate {results[-1]['estimate_mb']} MB, measured {measured} MB, ratio "
              f"{results[-1]['ratio']} ({got['status']}, {got['wall_s']} s)", file=sys.stderr, flush=True)

    print("== fit estimate against the measured peak RSS (bundled SmolLM2, CPU, fp32) ==")
    print(f"machine: {describe()}")
    try:
        print("load average at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    except OSError:
        pass
    print(f"{args.steps} optimizer steps per run, {args.threads} threads; settings: the stage's defaults"
          + (f", with {changes}" if changes else ""))
    print(f"| row | settings | estimate MB | measured MB | estimate / measured | within {TARGET:.0%} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        ok = r["ratio"] is not None and abs(r["ratio"] - 1) <= TARGET
        note = "" if r["status"] == "done" else f" ({r['status']}: {r['error']})"
        print(f"| {r['row']} | {r['settings'] or 'defaults'} | {r['estimate_mb']} | {r['measured_mb']} | "
              f"{r['ratio']} | {'yes' if ok else 'NO'}{note} |")
    for r in results:
        print(f"{r['row']} parts (MB): {r['parts_mb']}")
    if args.json:
        print(json.dumps({"rows": results, "changes": changes}))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"scratch folder kept: {work}")
    return 0 if all(r["ratio"] is not None and abs(r["ratio"] - 1) <= TARGET for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
