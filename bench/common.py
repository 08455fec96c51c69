"""Shared parts of the "ours vs TRL" training benchmarks (``bench_sft_vs_trl``, ``bench_rm_vs_trl``).

- :func:`prepare_hh`: the data both sides train on. HH-RLHF helpful-base test rows go through our importer into a
  scratch project; the first pairs whose chosen *and* rejected conversations fit ``max_length`` under the chat
  template are frozen into a preference snapshot (TRL's RewardTrainer drops longer pairs while we truncate them, so
  only pairs that fit give both sides the very same examples); each chosen reply of those pairs also becomes a
  demonstration, frozen into an SFT snapshot. Both snapshots are exported with our exporter to TRL JSONL: our
  engine trains on the snapshot, TRL on the file, i.e. on the same rows.
- :func:`run_side`: one side of a benchmark in a fresh Python process (so ``ru_maxrss`` is that side's own peak),
  returning the JSON object it prints last.
- :func:`steady_rate`: tokens/s between the end of the warm-up steps and the end of the last step, from marks
  ``(step, time, cumulative tokens)`` taken at each optimizer step's end on either side.
- :func:`print_report`: the machine line, each side's figures and the ratios against the targets.

Tokens are always real tokens (no padding) of the conversations processed: prompt + response for SFT, both full
conversations (prompt counted twice) for a preference pair, which is how TRL's own ``num_tokens`` metric counts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HH_FILE = "anthropic-hh-rlhf/helpful-base/test.jsonl.gz"


# ---------------------------------------------------------------------------------------------------- options
def add_common_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per side (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="optimizer steps run first and left out of the timing")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="torch threads for both sides (default: all cores; our worker would otherwise leave one)")
    ap.add_argument("--nice", type=int, default=10,
                    help="niceness of both sides (our worker lowers itself by 10; TRL gets the same)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up step + 2 timed steps")
    ap.add_argument("--only", choices=("ours", "trl"), help="run one side only")
    ap.add_argument("--trl-gradient-checkpointing", choices=("default", "on", "off"), default="default",
                    help="TRL's gradient checkpointing (default: TRL's default, which is on)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (data, run folders)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every figure")


def resolve_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.steps, args.warmup = 2, 1


def rows_needed(args: argparse.Namespace) -> int:
    """One epoch: every example is seen once over warm-up + timed steps, by both sides."""
    return args.batch_size * (args.steps + args.warmup)


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class BenchData:
    project: str
    pref_snapshot: int
    sft_snapshot: int
    pref_jsonl: str
    sft_jsonl: str
    pairs: int
    sft_examples: int
    hh_rows_read: int
    pairs_too_long: int


def _length(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def prepare_hh(workdir: Path, n: int, max_length: int) -> BenchData:
    """A scratch project in ``workdir`` with ``n`` HH pairs that fit ``max_length`` and ``n`` demonstrations (their
    chosen replies), frozen as snapshots and exported as TRL JSONL (see the module docstring)."""
    from transformers import AutoTokenizer

    from workbench import training_data as td
    from workbench.exporters import export
    from workbench.importers import import_file
    from bench.real_data import real_data_dir
    from workbench.paths import bundled_model_dir
    from workbench.store import Project

    workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_dir()))
    # Read a few times more rows than needed: some pairs do not fit max_length, some prompts may be held out.
    take = max(4 * n, 64)
    raw = workdir / "hh-head.jsonl"
    with gzip.open(real_data_dir() / HH_FILE, "rt", encoding="utf-8") as src, open(raw, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= take:
                break
            dst.write(line)
    project = Project.create(workdir / "bench.wbp")
    import_file(project, raw, "hh-rlhf")

    every = td.preference_snapshot(project, note="bench: every imported pair")
    options = td.snapshot_options(project, every, "preference")
    chosen_ids: list[int] = []
    demos: list[tuple[int, str]] = []
    too_long = 0
    for pair in td.preference_pairs(project, every):
        if len(chosen_ids) == n:
            break
        fits = all(
            _length(tokenizer, [*pair.prompt, {"role": "assistant", "content": reply}]) <= max_length
            for reply in (pair.chosen, pair.rejected)
        )
        if not fits or pair.comparison_id is None:
            too_long += int(not fits)
            continue
        chosen_ids.append(pair.comparison_id)
        demos.append((pair.prompt_id, pair.chosen))
    if len(chosen_ids) < n:
        raise SystemExit(f"only {len(chosen_ids)} of the first {take} HH rows fit max_length {max_length}; "
                         f"{n} are needed")
    pref = project.create_snapshot("preference", {"comparison": chosen_ids}, options=options,
                                   note=f"bench: {n} pairs within {max_length} tokens")
    for pid, content in demos:
        project.add_demonstration(pid, content, source="bench: HH chosen reply")
    sft = td.sft_snapshot(project, note="bench: the chosen replies as demonstrations")
    pref_jsonl, sft_jsonl = workdir / "pairs.jsonl", workdir / "sft.jsonl"
    pairs = export(project, pref_jsonl, "trl-preference", snapshot_id=pref).rows
    examples = export(project, sft_jsonl, "trl-sft", snapshot_id=sft).rows
    project.close()
    return BenchData(str(workdir / "bench.wbp"), pref, sft, str(pref_jsonl), str(sft_jsonl), pairs, examples,
                     take, too_long)


# ---------------------------------------------------------------------------------------------------- sides
def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)


def steady_rate(marks: list[tuple], warmup: int) -> dict[str, float]:
    """Tokens, seconds and tokens/s from the end of step ``warmup`` to the last mark. ``marks``: (step, seconds,
    cumulative tokens[, cumulative CPU seconds of the training process]) at the end of each optimizer step. With
    CPU seconds, also tokens per CPU-second: less sensitive than wall time to other processes on a shared machine
    (a hint of the quiet-machine ratio, not a replacement for it)."""
    by_step = {m[0]: m[1:] for m in marks}
    last = max(by_step) if by_step else 0
    if warmup not in by_step or last <= warmup:
        return {"tokens": 0.0, "seconds": 0.0, "tokens_per_s": 0.0, "timed_steps": 0}
    (t0, k0, *c0), (t1, k1, *c1) = by_step[warmup], by_step[last]
    tokens, seconds = k1 - k0, t1 - t0
    out = {"tokens": tokens, "seconds": round(seconds, 2),
           "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0, "timed_steps": last - warmup}
    if c0 and c1 and c1[0] > c0[0]:
        out["cpu_s"] = round(c1[0] - c0[0], 2)
        out["tokens_per_cpu_s"] = round(tokens / (c1[0] - c0[0]), 1)
    return out


def run_side(module: str, argv: list[str], *, timeout: float | None = None) -> dict[str, Any]:
    """``python -m module argv`` in a fresh process; the last line of its stdout is its JSON result. A side that
    fails (or is killed, e.g. by the OOM killer) gives ``{"error": ...}`` rather than stopping the benchmark."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"{module} failed ({why})", "stderr_tail": tail, "process_wall_s": round(wall, 1)}
    result = json.loads(lines[-1])
    result["process_wall_s"] = round(wall, 1)
    return result


# ---------------------------------------------------------------------------------------------------- report
def print_report(title: str, args: argparse.Namespace, data: BenchData, ours: dict[str, Any] | None,
                 trl: dict[str, Any] | None, *, speed_target: float, data_note: str) -> dict[str, Any]:
    from bench.machine import describe

    print(f"== {title} ==")
    print(f"machine: {describe()}")
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average at the end: {load} (figures on a loaded machine are indicative only)")
    except OSError:
        pass
    print(f"setting: bundled SmolLM2-135M-Instruct, fp32 CPU, LoRA r={args.lora_r} all-linear, batch {args.batch_size}, "
          f"max length {args.max_length}, {args.warmup} warm-up + {args.steps} timed optimizer steps, "
          f"torch threads {args.threads}, nice {args.nice}")
    print(f"data: {data_note}")
    sides = {"ours": ours, "trl": trl}
    for name, r in sides.items():
        if r is None:
            continue
        if "error" in r:
            print(f"  {name:5s} FAILED: {r['error']}")
            for ln in r.get("stderr_tail", "").splitlines():
                print(f"        | {ln}")
            continue
        print(f"  {name:5s} {r['tokens_per_s']:8.1f} tokens/s ({int(r['tokens'])} tokens in {r['seconds']:.1f} s over "
              f"{r['timed_steps']} steps), peak RSS {r['peak_rss_mb']:7.0f} MB, wall {r['process_wall_s']:.0f} s"
              + (f", {r['tokens_per_cpu_s']:.1f} tokens per CPU-second" if r.get("tokens_per_cpu_s") else "")
              + (f"  [{r['note']}]" if r.get("note") else ""))
    result: dict[str, Any] = {"bench": title, "data": asdict(data), "ours": ours, "trl": trl,
                              "speed_target": speed_target}
    ok = lambda r: r is not None and "error" not in r and r.get("tokens_per_s")  # noqa: E731
    if ok(ours) and ok(trl):
        speed = ours["tokens_per_s"] / trl["tokens_per_s"]
        mem = ours["peak_rss_mb"] / trl["peak_rss_mb"]
        result.update(speed_ratio=round(speed, 2), memory_ratio=round(mem, 2),
                      speed_pass=speed >= speed_target, memory_pass=mem <= 1.0)
        print(f"  tokens/s ours / TRL = {speed:.2f}x (target >= {speed_target}x): {'PASS' if speed >= speed_target else 'FAIL'}")
        if ours.get("tokens_per_cpu_s") and trl.get("tokens_per_cpu_s"):
            cpu = ours["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
            result["cpu_speed_ratio"] = round(cpu, 2)
            print(f"  tokens per CPU-second ours / TRL = {cpu:.2f}x (load-robust hint only; the target is on wall time)")
        print(f"  peak RSS ours / TRL = {mem:.2f} (target <= 1.00): {'PASS' if mem <= 1.0 else 'FAIL'}")
    if args.json:
        print(json.dumps(result))
    return result
