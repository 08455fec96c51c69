"""Shared parts of the "ours vs TRL" training benchmarks (``bench_sft_vs_trl``, ``bench_rm_vs_trl``,
``bench_dpo_speed``, and the process measurement of the online-RL ones).

- :func:`prepare_hh`: the data both sides train on. HH-RLHF helpful-base test rows go through our importer into a
  scratch project; the first pairs whose chosen *and* rejected conversations fit ``max_length`` under the chat
  template are frozen into a preference snapshot (TRL's RewardTrainer drops longer pairs while we truncate them, so
  only pairs that fit give both sides the very same examples); each chosen reply of those pairs also becomes a
  demonstration, frozen into an SFT snapshot. Both snapshots are exported with our exporter to TRL JSONL: TRL trains
  on the file; our side imports the same file into a fresh project (``workbench import --format trl``) and trains
  on that, as a user would (:func:`run_ours_cli`).
- :func:`timed_command`: a command under GNU ``time``: whole-process wall time, CPU time and the peak RSS of the
  largest process it ran (``%M``: Linux reports the largest single process of the tree, not a sum), plus the JSON
  object it prints last. :func:`run_side` runs a benchmark module that way (TRL's side).
- :func:`run_ours_cli`: our side through the command line, ``workbench train STAGE PROJECT --config FILE`` with the
  issue's flags, under GNU time; the steady rate from the run folder's ``events.log``.
- :func:`steady_rate`: tokens/s between the end of the warm-up steps and the end of the last step, from marks
  ``(step, time, cumulative tokens)`` taken at each optimizer step's end on either side.
- :func:`print_report`: the machine line, each side's figures and the ratios against the targets: whole-process
  speed (TRL's wall time over ours, for the same data and steps) and peak RSS first, the steady-state tokens/s
  after the warm-up steps beside them.

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
import tempfile
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
    ap.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of our run config (YAML value), e.g. tokens_per_pass=512; repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (data, run folders)")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every figure")


def ours_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--ours-set KEY=VALUE`` pairs as config settings (values read as YAML)."""
    import yaml

    out = {}
    for item in args.ours_set:
        key, _, value = item.partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out


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


GNU_TIME = "/usr/bin/time"


def env_for_children() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


def last_json(stdout: str) -> dict[str, Any]:
    """The last stdout line that is a JSON object (TRL prints its logs as Python dicts, which are not)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}


def timed_command(cmd: list[str], *, timeout: float | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` under GNU time: its last JSON stdout line, plus ``process_wall_s``, ``process_cpu_s`` and
    ``process_peak_rss_mb`` (the largest process). Without GNU time: wall time and the children's ``ru_maxrss``. A
    command that fails (or is killed, e.g. by the OOM killer) gives ``{"error": ...}`` rather than stopping the
    benchmark."""
    use_gnu = Path(GNU_TIME).is_file()
    stats = Path(tempfile.gettempdir()) / f"bench-time-{os.getpid()}-{time.monotonic_ns()}.txt"
    full = [GNU_TIME, "-o", str(stats), "-f", "%e %U %S %M", *cmd] if use_gnu else cmd
    t0 = time.perf_counter()
    proc = subprocess.run(full, cwd=REPO, env=env or env_for_children(), capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - t0
    result = last_json(proc.stdout)
    if proc.returncode != 0 or not result:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        result = {**result, "error": result.get("error") or f"{' '.join(cmd[1:4])} failed ({why})",
                  "stderr_tail": tail}
    if use_gnu and stats.is_file():
        fields = stats.read_text().strip().splitlines()[-1].split()
        stats.unlink()
        if len(fields) == 4 and fields[0][0].isdigit():
            result.update(process_wall_s=float(fields[0]), process_cpu_s=round(float(fields[1]) + float(fields[2]), 1),
                          process_peak_rss_mb=round(int(fields[3]) / 1024, 1), measured_by="GNU time")
    if "process_wall_s" not in result:
        result.update(process_wall_s=round(wall, 1),
                      process_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                      measured_by="wall clock and RUSAGE_CHILDREN")
    return result


def run_side(module: str, argv: list[str], *, timeout: float | None = None) -> dict[str, Any]:
    """``python -m module argv`` in a fresh process under GNU time (:func:`timed_command`)."""
    return timed_command([sys.executable, "-m", module, *argv], timeout=timeout)


def workbench_cli(*args: str) -> list[str]:
    """The ``workbench`` command as a user runs it (``python -m workbench.cli`` is the console script's target)."""
    return [sys.executable, "-m", "workbench.cli", *args]


def import_for_ours(workdir: Path, jsonl: str, name: str) -> str:
    """A fresh project holding ``jsonl`` (a TRL export) imported with ``workbench import --format trl``."""
    project = workdir / f"{name}.wbp"
    for cmd in (workbench_cli("init", str(project)), workbench_cli("import", str(project), jsonl, "--format", "trl")):
        done = subprocess.run(cmd, cwd=REPO, env=env_for_children(), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[3:])} failed: {done.stderr.strip()[-1000:]}")
    return str(project)


def run_ours_cli(stage: str, project: str, config: Any, workdir: Path, args: argparse.Namespace,
                 *, nice: int | None = None) -> dict[str, Any]:
    """``workbench train STAGE PROJECT --config FILE --epochs 1 --batch-size B --max-length L --lora-r R --quiet``
    under GNU time, the worker at niceness ``nice`` (its default 10 otherwise); the JSON summary with the
    whole-process figures and the steady rate from the run's events."""
    path = workdir / f"{stage}.yaml"
    config.save(path)
    env = env_for_children()
    if nice is not None:
        env["RLHF_WORKBENCH_WORKER_NICE"] = str(nice)
    result = timed_command(workbench_cli("train", stage, project, "--config", str(path), "--epochs", "1",
                                         "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                                         "--lora-r", str(args.lora_r), "--quiet"), env=env)
    if result.get("status") != "done":
        result.setdefault("error", f"our {stage} run ended {result.get('status')}")
        return result
    from workbench.jobs.protocol import EVENTS_LOG, Event, EventType

    run_dir = Path(result["output"]).parent
    marks = []
    for line in (run_dir / EVENTS_LOG).read_text(encoding="utf-8").splitlines():
        ev = Event.from_json(line)
        if ev.type == EventType.PROGRESS and ev.step is not None and "tokens" in ev.data:
            marks.append((int(ev.step), ev.time, float(ev.data["tokens"])))
    result.update(steady_rate(marks, args.warmup), side="ours", run_dir=str(run_dir))
    return result


# ---------------------------------------------------------------------------------------------------- report
def print_report(title: str, args: argparse.Namespace, data: BenchData, ours: dict[str, Any] | None,
                 trl: dict[str, Any] | None, *, data_note: str, speed_target: float | None = None,
                 memory_target: float = 1.0, tokens_target: float | None = None) -> dict[str, Any]:
    """Each side's figures and the ratios. ``speed_target``: on whole-process speed (TRL's wall time over ours);
    ``memory_target``: on the peak RSS of the largest process; ``tokens_target``: on the tokens/s the sides report
    (the steady rate, or for DPO its rate with the reference pass)."""
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
    for name, r in (("ours", ours), ("trl", trl)):
        if r is None:
            continue
        if "error" in r:
            print(f"  {name:5s} FAILED: {r['error']}")
            for ln in str(r.get("stderr_tail", "")).splitlines():
                print(f"        | {ln}")
            continue
        print(f"  {name:5s} whole process {r['process_wall_s']:6.1f} s wall"
              + (f", {r['process_cpu_s']:6.1f} s CPU" if r.get("process_cpu_s") else "")
              + f", peak RSS {r['process_peak_rss_mb']:6.0f} MB ({r.get('measured_by')}); "
              f"steady {r.get('tokens_per_s', 0):7.1f} tokens/s ({int(r.get('tokens', 0))} tokens in "
              f"{r.get('seconds', 0):.1f} s over {r.get('timed_steps', 0)} steps after the warm-up)"
              + (f"  [{r['note']}]" if r.get("note") else ""))
    result: dict[str, Any] = {"bench": title, "data": asdict(data), "ours": ours, "trl": trl,
                              "speed_target": speed_target, "memory_target": memory_target}
    ok = lambda r: r is not None and "error" not in r  # noqa: E731
    if ok(ours) and ok(trl):
        speed = trl["process_wall_s"] / ours["process_wall_s"]
        mem = ours["process_peak_rss_mb"] / trl["process_peak_rss_mb"]
        result.update(speed_ratio=round(speed, 2), memory_ratio=round(mem, 2), memory_pass=mem <= memory_target)
        verdict = f" (target >= {speed_target}x): {'PASS' if speed >= speed_target else 'FAIL'}" if speed_target else ""
        print(f"  whole process: ours {speed:.2f}x TRL's speed{verdict}")
        if speed_target:
            result["speed_pass"] = speed >= speed_target
        if ours.get("process_cpu_s") and trl.get("process_cpu_s"):
            cpu = trl["process_cpu_s"] / ours["process_cpu_s"]
            result["cpu_ratio"] = round(cpu, 2)
            print(f"  whole-process CPU time TRL / ours = {cpu:.2f}x (less sensitive to other load; a hint only)")
        if ours.get("tokens_per_s") and trl.get("tokens_per_s"):
            tokens = ours["tokens_per_s"] / trl["tokens_per_s"]
            result["tokens_ratio"] = round(tokens, 2)
            verdict = (f" (target >= {tokens_target}x): {'PASS' if tokens >= tokens_target else 'FAIL'}"
                       if tokens_target else "")
            print(f"  tokens/s ours / TRL = {tokens:.2f}x{verdict}")
            if tokens_target:
                result["tokens_pass"] = tokens >= tokens_target
        print(f"  peak RSS ours / TRL = {mem:.2f} (target <= {memory_target:.2f}): "
              f"{'PASS' if mem <= memory_target else 'FAIL'}")
    if args.json:
        print(json.dumps(result, default=str))
    return result
