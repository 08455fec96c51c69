"""Online RL quality per hour against TRL: the same reward model and prompts, the same wall-clock budget of training
for our ``ppo`` job (rloo) and TRL's ``RLOOTrainer``, then the same held-out evaluation of both policies.

    python -m bench.bench_rl_quality_vs_trl [--minutes 30] [--rows 1200] [--heldout 64] [--rm-steps 110]
                                            [--reward-model ADAPTER --reward-export HF_DIR] [--eval-passes 4]
                                            [--lr 3e-4] [--prompts-per-step 8] [--samples-per-prompt 4]
                                            [--max-new-tokens 64] [--kl-coef 0.05] [--threads N] [--quick] [--json]

1. A scratch project of HH-RLHF helpful-base rows (our importer); ``--heldout`` prompts drawn at random go to the
   held-out split (never trained on), every other prompt is a training prompt for both sides (TRL reads them from
   JSONL and shuffles them; ours draws them in its seeded order).
2. A reward model trained in the project (``workbench train rm``, ``--rm-steps`` steps, LoRA on the top 10 layers,
   lr 5e-4: the PPO quality benchmark's reward model) and exported as a sequence classifier (``workbench
   export-model … --format hf``), or ``--reward-model``/``--reward-export`` to reuse one. Ours scores with the adapter
   on the shared base, TRL with the export: the same function up to the constant ``score_bias``, which RLOO's
   advantages do not see (``bench.rl_common.SCORE_BIAS_NOTE``).
3. Each side trains alone for ``--minutes`` of wall time from its start (model loading included): ours through the
   job client, as ``workbench train ppo`` runs (cancelled at the budget, which checkpoints; its policy is that
   checkpoint's), TRL's in a fresh process (stopped at the next step boundary after the budget; its adapter saved).
   Matched settings: k responses per prompt, prompts per step, one optimizer step per rollout, response length,
   sampling (temperature 1), LoRA r=16 on all linear layers, the fixed KL coefficient, a constant learning rate, the
   raw reward, fp32 on the CPU, threads.
4. The held-out evaluation of the PPO quality benchmark (``bench.bench_ppo_quality.evaluate``): ``--eval-passes``
   responses per held-out prompt from the bare base (before) and from each policy (after), the same seed, scored by
   the reward model; each side's gain is in units of the "before" standard deviation, with its standard error, and
   its KL to the base in nats per response.

Goal: our gain at least TRL's, or behind by less than one standard error of the difference. Run it alone on the
machine, once. ``--quick`` (a couple of minutes: 1 minute per side, a tiny reward model, 8 held-out prompts, one
pass, 16 new tokens) only proves the script works.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import run_side  # noqa: E402
from bench.rl_common import SCORE_BIAS_NOTE, machine_load, ppo_config, prepare_prompts, train_reward_model  # noqa: E402


def gain(before: dict, after: dict) -> tuple[float, float]:
    """(the reward gain in "before" standard deviations, its standard error from both sides' spreads)."""
    sd = max(before["std"], 1e-9)
    n_b, n_a = len(before["scores"]), len(after["scores"])
    return (after["mean"] - before["mean"]) / sd, math.sqrt(before["std"] ** 2 / n_b + after["std"] ** 2 / n_a) / sd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget per side")
    ap.add_argument("--rows", type=int, default=1200, help="HH-RLHF helpful-base rows imported")
    ap.add_argument("--heldout", type=int, default=64, help="held-out prompts of the evaluation")
    ap.add_argument("--rm-steps", type=int, default=110)
    ap.add_argument("--reward-model", help="reuse this reward adapter folder (with --reward-export)")
    ap.add_argument("--reward-export", help="its hf export")
    ap.add_argument("--eval-passes", type=int, default=4, help="responses per held-out prompt in the evaluation")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--kl-coef", type=float, default=0.05, help="fixed KL coefficient (TRL's beta)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each side")
    ap.add_argument("--nice", type=int, default=10, help="niceness of both sides (our worker's default)")
    ap.add_argument("--quick", action="store_true", help="a smoke run of a couple of minutes")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.minutes, args.rows, args.heldout, args.rm_steps = 1.0, 120, 8, 3
        args.eval_passes, args.max_new_tokens, args.prompts_per_step = 1, 16, 4
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from bench.bench_ppo_quality import evaluate, follow
    from bench.machine import describe
    from engine import checkpoints as ckpt
    from workbench.jobs.client import JobClient

    work = Path(tempfile.mkdtemp(prefix="bench-rl-quality-"))
    try:
        data = prepare_prompts(work, None, rows=args.rows, heldout=args.heldout, seed=args.seed)
        print(f"== online RL quality per hour: ours (ppo, rloo) vs TRL RLOOTrainer ==", flush=True)
        print(f"machine: {describe()}; load average at the start: {machine_load()}", flush=True)
        print(f"data: {data.train_prompts} training prompts, {data.heldout_prompts} held out, from {args.rows} HH "
              "helpful-base rows", flush=True)
        if args.reward_model and args.reward_export:
            adapter, export = args.reward_model, args.reward_export
            rm = {"reused": True, "score_bias": json.loads((Path(export) / "config.json").read_text()).get("score_bias")}
        else:
            adapter, export, rm = train_reward_model(data.project, work, steps=args.rm_steps, threads=args.threads,
                                                     lora_top_layers=10)
        print(f"reward model {adapter}: {rm}; {SCORE_BIAS_NOTE}", flush=True)
        evaluation = dict(max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=8, passes=args.eval_passes)
        before = evaluate(None, adapter, data.heldout, **evaluation)
        print(f"before: {before['mean']:.3f} ± {before['std']:.3f} over {len(before['scores'])} responses", flush=True)

        # ours: the ppo job, stopped (with a checkpoint) at the budget
        cfg = ppo_config(snapshot_id=data.snapshot_id, reward_model=adapter, steps=100_000, threads=args.threads,
                         samples_per_prompt=args.samples_per_prompt, prompts_per_step=args.prompts_per_step,
                         max_new_tokens=args.max_new_tokens, lr=args.lr, kl_coef=args.kl_coef, seed=args.seed,
                         min_lr_ratio=1.0, checkpoint_every=20, name="bench: RL quality vs TRL")
        os.environ["RLHF_WORKBENCH_WORKER_NICE"] = str(args.nice)
        t0 = time.perf_counter()
        handle = JobClient(data.project).start("ppo", cfg)
        ours_run = follow(handle, minutes=args.minutes, label="ours")
        ours_minutes = (time.perf_counter() - t0) / 60
        last = ckpt.latest_checkpoint(handle.run_dir / "checkpoints")
        ours_policy = ours_run.get("output") or (str(last / "adapter") if last else None)
        ours_steps = int(last.name.split("-")[-1]) if last else 0

        # TRL: RLOOTrainer, stopped at the first step boundary after the budget, its adapter saved
        trl_dir = work / "trl-policy"
        trl = run_side("bench.peer_rloo", [
            "--prompts", data.prompts_jsonl, "--shuffle", "--reward-model", export, "--steps", "100000",
            "--minutes", str(args.minutes), "--save", str(trl_dir), "--samples-per-prompt", str(args.samples_per_prompt),
            "--prompts-per-step", str(args.prompts_per_step), "--max-new-tokens", str(args.max_new_tokens),
            "--lr", str(args.lr), "--beta", str(args.kl_coef), "--seed", str(args.seed), "--threads", str(args.threads),
            "--nice", str(args.nice)])
        if "error" in trl:
            raise SystemExit(f"TRL's run failed: {trl['error']}\n{trl.get('stderr_tail', '')}")

        ours_after = evaluate(ours_policy, adapter, data.heldout, **evaluation)
        trl_after = evaluate(str(trl_dir), adapter, data.heldout, **evaluation)
        (g_ours, se_ours), (g_trl, se_trl) = gain(before, ours_after), gain(before, trl_after)
        se_diff = math.sqrt(se_ours ** 2 + se_trl ** 2)
        print(f"setting: {args.prompts_per_step} prompts x {args.samples_per_prompt} responses a step, one optimizer "
              f"step per rollout, up to {args.max_new_tokens} new tokens, lr {args.lr} (constant), KL coefficient "
              f"{args.kl_coef} (fixed), LoRA r=16 all-linear, fp32 CPU, {args.threads} threads, "
              f"{args.minutes} min per side, {args.eval_passes} response(s) per held-out prompt")
        print(f"  ours: {ours_steps} steps in {ours_minutes:.1f} min; after {ours_after['mean']:.3f} ± "
              f"{ours_after['std']:.3f}; gain {g_ours:.2f} ± {se_ours:.2f} std; KL {ours_after['kl']:.2f} nats/response")
        print(f"  TRL:  {trl['steps']} steps in {trl['process_wall_s'] / 60:.1f} min; after {trl_after['mean']:.3f} ± "
              f"{trl_after['std']:.3f}; gain {g_trl:.2f} ± {se_trl:.2f} std; KL {trl_after['kl']:.2f} nats/response")
        diff = g_ours - g_trl
        ok = diff >= 0 or -diff < se_diff
        print(f"  gain ours − TRL = {diff:+.2f} ± {se_diff:.2f} std (goal: at least TRL's, or behind by less than one "
              f"standard error): {'PASS' if ok else 'FAIL'}")
        print(f"load average at the end: {machine_load()} (run it alone: the budget is wall-clock time)")
        if args.json:
            print(json.dumps({"before": {k: v for k, v in before.items() if k != "texts"},
                              "ours": {"steps": ours_steps, "minutes": ours_minutes, "gain": g_ours, "se": se_ours,
                                       "kl": ours_after["kl"], "mean": ours_after["mean"]},
                              "trl": {"steps": trl["steps"], "minutes": trl["process_wall_s"] / 60, "gain": g_trl,
                                      "se": se_trl, "kl": trl_after["kl"], "mean": trl_after["mean"],
                                      "peak_rss_mb": trl.get("process_peak_rss_mb")},
                              "difference": diff, "se_difference": se_diff, "reward_model": rm}))
        if args.keep:
            print(f"scratch folder kept: {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
