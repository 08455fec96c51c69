"""Our side of the training benchmarks, through the product path: ``workbench.jobs.client.JobClient`` starts
``python -m engine.worker`` on an ``sft`` or ``rm`` run config, exactly as ``workbench train`` does, and this
driver reads the worker's events.

    python -m bench.ours_job sft|rm --project FILE.wbp --snapshot ID --steps N --warmup W [--batch-size 8] ...

The config matches the TRL side: the bundled SmolLM2 in fp32 on the CPU, no quantisation, LoRA r (alpha 32,
dropout 0.05, all linear layers: our defaults), batch size, max length, warm-up + timed optimizer steps, no eval
split (``eval_fraction 0``), no intermediate checkpoints, torch threads. The worker lowers its own priority by 10.

Timing: each ``progress`` event carries the step and the cumulative real-token count (no padding) and is stamped
by the worker when the step has ended; the worker's CPU time is read from /proc as each one arrives. Tokens/s runs
from the end of the warm-up steps to the end of the last step. Peak memory: ``ru_maxrss`` of the worker process
(taken here from RUSAGE_CHILDREN once it has exited, and cross-checked with the ``peak_mem_mb`` the worker
reports). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import steady_rate  # noqa: E402


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc; 0 where that is not available."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("sft", "rm"))
    ap.add_argument("--project", required=True)
    ap.add_argument("--snapshot", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from workbench.configs import RewardConfig, SftConfig
    from workbench.jobs.client import JobClient
    from workbench.jobs.protocol import EventType

    cls = SftConfig if args.kind == "sft" else RewardConfig
    cfg = cls(
        snapshot_id=args.snapshot, device="cpu", dtype="float32", quantize="none", lora_r=args.lora_r,
        batch_size=args.batch_size, grad_accum=1, max_length=args.max_length, max_steps=args.warmup + args.steps,
        eval_fraction=0.0, checkpoint_every=0, log_every=1, num_threads=args.threads, name="bench vs TRL",
    )
    handle = JobClient(args.project).start(args.kind, cfg)
    marks: list[tuple[int, float, float]] = []
    logs: list[str] = []
    summary: dict = {}
    t_first = None
    for ev in handle.events():
        if ev.type == EventType.PROGRESS and ev.step is not None and "tokens" in ev.data:
            marks.append((int(ev.step), ev.time, float(ev.data["tokens"]), _cpu_seconds(handle.pid)))
        elif ev.type == EventType.STATUS and ev.data.get("state") == "running":
            t_first = ev.time
        elif ev.type == EventType.LOG:
            logs.append(str(ev.data.get("message", "")))
        elif ev.type == EventType.DONE:
            summary = dict(ev.data.get("summary") or {})
    children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if handle.status != "done":
        print(json.dumps({"side": "ours", "kind": args.kind, "error": f"our {args.kind} run ended {handle.status}: "
                          f"{handle.error}", "stderr_tail": "\n".join(logs[-5:])}))
        return 1
    rate = steady_rate(marks, args.warmup)
    result = {
        "side": "ours", "kind": args.kind, **rate,
        "peak_rss_mb": round(children_rss, 1), "worker_peak_mem_mb": summary.get("peak_mem_mb"),
        "wall_s": round(time.perf_counter() - started, 1),
        "train_wall_s": round(marks[-1][1] - t_first, 1) if marks and t_first else None,
        "job_tokens_per_s_incl_warmup": summary.get("tokens_per_s"), "steps": summary.get("steps"),
        "run_dir": str(handle.run_dir), "log": logs,
        "marks": [(s, round(t - (t_first or t), 3), k, round(c, 2)) for s, t, k, c in marks],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
