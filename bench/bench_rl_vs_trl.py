"""Online RL speed and memory: our ``ppo`` job with the rloo estimator against TRL's ``RLOOTrainer``, each side a
fresh process on the same prompts, same k, lengths, LoRA, sampling settings and reward.

    python -m bench.bench_rl_vs_trl [--reward rule|model|both] [--steps 4] [--prompts 64] [--word WORD]
                                    [--rm-steps 30] [--reward-model ADAPTER --reward-export HF_DIR]
                                    [--threads N] [--nice 10] [--quick] [--only ours|trl] [--keep] [--json]

Setting: the bundled SmolLM2-135M-Instruct in fp32 on the CPU; 64 HH-RLHF helpful-base prompts (our importer, a
prompts snapshot; TRL reads the same prompts from JSONL in the order our job draws them, so each step of both sides
answers the same 4 prompts); k = 4 responses per prompt, 4 prompts per optimizer step (16 responses), one
optimizer step per rollout (``ppo_epochs`` 1 / ``num_iterations`` 1), up to 32 new tokens, temperature 1 with no
top-p or top-k, LoRA r=16 (alpha 32, no dropout) on all linear layers, KL coefficient 0.05 (TRL's ``beta``,
fixed on both sides), the raw reward, learning rate 1e-6 (TRL's default). Rewards:

- ``rule``: +1 when the reply contains ``--word`` (case-insensitive), a plain function on both sides;
- ``model``: a reward model trained in the project (``workbench train rm``, ``--rm-steps`` steps) and exported with
  ``workbench export-model … --format hf`` (fp32), which TRL loads as a sequence-classification reward function;
  ours runs the same reward model as its adapter on the shared base, as a user would point PPO at a reward-model
  run. The export's ``score_bias`` does not matter for RLOO (``bench.rl_common.SCORE_BIAS_NOTE``).

Ours runs as a user would: ``workbench train ppo PROJECT --config FILE`` (the config's settings are printed).
Both sides run under GNU ``time``: whole-process wall time for the same number of optimizer steps, and the peak
RSS of the largest process (``%M``; ours: the worker; the CLI that waits for it is smaller). Steady-state seconds
per step are the mean over the steps after the first, split into sampling / scoring / update: ours from the run's
``perf/sample_s``, ``perf/score_s`` and ``perf/update_s`` metrics, TRL's from timers around its own methods
(``bench.peer_rloo``). Targets: whole-process speed ≥ 2× TRL's, peak RSS ≤ 0.5× TRL's. ``--quick``: 2 steps,
a reward model of 4 steps. The exit code is 0 whatever the outcome (a report).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import env_for_children, timed_command, workbench_cli  # noqa: E402
from bench.rl_common import (  # noqa: E402
    SCORE_BIAS_NOTE, machine_load, ppo_config, prepare_prompts, steady, train_reward_model,
)

SPEED_TARGET, MEMORY_TARGET = 2.0, 0.5
PHASES = ("step_s", "sample_s", "score_s", "update_s")


def run_ours(args: argparse.Namespace, project: str, snapshot_id: int, reward_model: str, work: Path) -> dict[str, Any]:
    from workbench.store import Project

    cfg = ppo_config(snapshot_id=snapshot_id, reward_model=reward_model, steps=args.steps, threads=args.threads,
                     max_new_tokens=args.max_new_tokens)
    path = work / f"ppo-{'rule' if reward_model.startswith('rule:') else 'model'}.yaml"
    cfg.save(path)
    env = env_for_children()
    env["RLHF_WORKBENCH_WORKER_NICE"] = str(args.nice)
    result = timed_command(workbench_cli("train", "ppo", project, "--config", str(path), "--quiet"), env=env)
    result["config"] = {k: v for k, v in cfg.to_dict().items() if k in (
        "advantage_estimator", "samples_per_prompt", "rollout_batch_size", "ppo_epochs", "max_new_tokens",
        "missing_eos_penalty", "lora_r", "batch_size", "max_steps", "kl_coef", "adaptive_kl", "normalize_reward",
        "reward_clip", "lr", "backward_rows")}
    if "error" in result or result.get("status") != "done":
        result.setdefault("error", f"our run ended {result.get('status')}: {result.get('error')}")
        return result
    with Project.open(project) as p:
        series = {k: [v for _, _, v in p.metrics(result["run_id"], f"perf/{k}")] for k in PHASES}
        rewards = [v for _, _, v in p.metrics(result["run_id"], "rollout/score_mean")]
    result["per_step"] = [{"step": i + 1, **{k: round(series[k][i], 3) for k in PHASES}}
                          for i in range(len(series["step_s"]))]
    result["rewards"] = rewards
    return result


def run_trl(args: argparse.Namespace, prompts_jsonl: str, reward: list[str]) -> dict[str, Any]:
    return timed_command([sys.executable, "-m", "bench.peer_rloo", "--prompts", prompts_jsonl, *reward,
                          "--steps", str(args.steps), "--max-new-tokens", str(args.max_new_tokens),
                          "--threads", str(args.threads), "--nice", str(args.nice)])


def report(title: str, ours: dict[str, Any] | None, trl: dict[str, Any] | None) -> dict[str, Any]:
    print(f"-- {title}")
    out: dict[str, Any] = {"ours": ours, "trl": trl}
    for name, r in (("ours", ours), ("trl", trl)):
        if r is None:
            continue
        if "error" in r:
            print(f"  {name:4s} FAILED: {r['error']}")
            for ln in str(r.get("stderr_tail", "")).splitlines():
                print(f"       | {ln}")
            continue
        s = steady(r["per_step"])
        r["steady"] = s
        print(f"  {name:4s} whole process {r['process_wall_s']:6.1f} s wall, {r.get('process_cpu_s', 0):6.1f} s CPU, "
              f"peak RSS {r['process_peak_rss_mb']:6.0f} MB; {len(r['per_step'])} steps; steady step {s.get('step_s', 0):.2f} s "
              f"= sampling {s.get('sample_s', 0):.2f} + scoring {s.get('score_s', 0):.2f} + update "
              f"{s.get('update_s', 0):.2f}; reward per step {[round(x, 3) for x in r.get('rewards', [])]}")
    ok = lambda r: r is not None and "error" not in r  # noqa: E731
    if ok(ours) and ok(trl):
        speed = trl["process_wall_s"] / ours["process_wall_s"]
        mem = ours["process_peak_rss_mb"] / trl["process_peak_rss_mb"]
        steady_speed = trl["steady"]["step_s"] / ours["steady"]["step_s"] if ours["steady"].get("step_s") else 0.0
        out.update(speed_ratio=round(speed, 2), memory_ratio=round(mem, 2), steady_step_ratio=round(steady_speed, 2))
        line = (f"  whole process: ours {speed:.2f}x TRL's speed (target >= {SPEED_TARGET}x): "
                f"{'PASS' if speed >= SPEED_TARGET else 'FAIL'}; steady step {steady_speed:.2f}x")
        if ours.get("process_cpu_s") and trl.get("process_cpu_s"):
            cpu = trl["process_cpu_s"] / ours["process_cpu_s"]
            out["cpu_ratio"] = round(cpu, 2)
            line += f"; CPU time {cpu:.2f}x (less sensitive to other load)"
        print(line)
        print(f"  peak RSS ours / TRL = {mem:.2f} (target <= {MEMORY_TARGET}): {'PASS' if mem <= MEMORY_TARGET else 'FAIL'}")
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.machine import describe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reward", choices=("rule", "model", "both"), default="both")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per side (default 4)")
    ap.add_argument("--prompts", type=int, default=64, help="training prompts (default 64)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--word", default="help", help="the rule reward's word (default 'help')")
    ap.add_argument("--rm-steps", type=int, default=30, help="steps of the reward model trained for --reward model")
    ap.add_argument("--reward-model", help="reuse this reward adapter folder (with --reward-export)")
    ap.add_argument("--reward-export", help="its hf export (workbench export-model … --format hf)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    ap.add_argument("--nice", type=int, default=10, help="niceness of both sides (our worker's default is 10)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 steps, a 4-step reward model")
    ap.add_argument("--only", choices=("ours", "trl"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.rm_steps = 2, 4
    work = Path(tempfile.mkdtemp(prefix="bench-rl-vs-trl-"))
    results: dict[str, Any] = {"bench": "online RL: ours (ppo, rloo) vs TRL RLOOTrainer", "machine": describe()}
    try:
        data = prepare_prompts(work, args.prompts, draws=args.steps * 4)
        print(f"== online RL: ours (workbench train ppo, rloo) vs TRL RLOOTrainer ==")
        print(f"machine: {describe()}; load average at the start: {machine_load()}")
        print(f"setting: bundled SmolLM2-135M-Instruct fp32 CPU, {data.train_prompts} HH helpful-base prompts, 4 "
              f"prompts x 4 responses a step, {args.max_new_tokens} new tokens, LoRA r=16 all-linear, temperature 1, "
              f"KL coef 0.05, {args.steps} optimizer steps, torch threads {args.threads}, nice {args.nice}")
        runs = []
        if args.reward in ("rule", "both"):
            runs.append(("rule reward: +1 when the reply contains " + repr(args.word), f"rule:contains:{args.word}",
                         ["--rule-word", args.word]))
        if args.reward in ("model", "both"):
            if args.reward_model and args.reward_export:
                adapter, export, figures = args.reward_model, args.reward_export, {"reused": True}
                config = json.loads((Path(export) / "config.json").read_text())
                figures["score_bias"] = config.get("score_bias")
            else:
                adapter, export, figures = train_reward_model(data.project, work, steps=args.rm_steps,
                                                              threads=args.threads)
            results["reward_model"] = {"adapter": adapter, "export": export, **figures}
            print(f"reward model: {figures}; {SCORE_BIAS_NOTE}")
            runs.append((f"reward model ({adapter}; TRL: its hf export)", adapter, ["--reward-model", export]))
        for title, ours_reward, trl_reward in runs:
            ours = run_ours(args, data.project, data.snapshot_id, ours_reward, work) if args.only != "trl" else None
            trl = run_trl(args, data.prompts_jsonl, trl_reward) if args.only != "ours" else None
            results[title] = report(title, ours, trl)
        print(f"load average at the end: {machine_load()} (figures on a loaded machine are indicative only)")
        if args.json:
            print(json.dumps(results, default=str))
        if args.keep:
            print(f"scratch folder kept: {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
