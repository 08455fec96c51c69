"""DPO quality on the bundled SmolLM2: does DPO on the preferences of the PPO quality benchmark raise the held-out
preference accuracy (implicit reward) above 0.6? (A benchmark to run alone, not a test.)

    python -m bench.bench_dpo_quality [--rows 2400] [--heldout 400] [--minutes 30] [--eval-every 40]
                                      [--lr 1e-4] [--beta 0.1] [--batch-size 8] [--max-length 512]
                                      [--lora-top-layers N] [--json]

1. The same preferences as ``bench.bench_ppo_quality``: its ``prepare`` imports the first ``--rows`` HH-RLHF
   helpful-base rows into a scratch project (our importer) and sets ``--heldout`` prompts (at most a fifth of them)
   to the held-out split, so their judgments never enter a training snapshot. ``../shared/data/real`` holds only
   helpful-base's *test* split (2,354 rows), not the train file that script names; then that file is used.
2. The ``dpo`` job through ``JobClient`` (the product path) on every training pair (no eval split: the held-out
   prompts are the measure): a fresh LoRA adapter on the bare base, the bare base as the frozen reference, sigmoid
   loss, ``--beta``, warm-up + cosine over one epoch (the job ends there if it is faster than the budget).
3. The job scores the held-out prompts' pairs itself (``heldout/`` metrics, engine/dpo.py): at step 0, every
   ``--eval-every`` steps and at the end. Accuracy = (pairs whose implicit reward β·(log π − log π_ref) is higher
   for the chosen response + half the ties) / pairs; a tie is a difference within 1e-6. At step 0 the policy *is*
   the reference (a fresh adapter adds exact zeros), so every pair is a tie and the accuracy is 0.5 by
   construction: the "before" line prints it with its tie count.
4. Training time is capped at ``--minutes`` (default 30): the time of the optimizer steps only, as the job
   reports it (``train/tokens`` ÷ ``train/tokens_per_s``); the reference pass before training and the held-out
   evaluations are not counted. At the cap the run is cancelled (checkpoint first) and the checkpoint's adapter is
   scored on the same held-out snapshot (``engine.trainers.dpo.evaluate_preferences``).

Held-out size: the interval must be narrow enough to tell 0.6 from 0.5. With n pairs the 95 % Wilson half-width
near p = 0.6 is about 0.96·sqrt(0.24/n): ±0.048 at n = 400 (so 0.6 is then clearly above 0.5: [0.55, 0.65]),
±0.068 at 200, ±0.14 at 50. Hence ``--heldout 400`` prompts (HH helpful-base has about one judgment per prompt),
and ``--rows 2400`` (all 2,354 rows of the file) so that ``prepare``'s one-fifth cap allows them and about 1,950
pairs remain for training, about what 30 minutes can consume on this CPU (one epoch: no pair is seen twice, so a
held-out gain is not memorisation).

Prints the curve (step, training minutes, held-out accuracy and interval, train loss and accuracy), before/after,
and PASS/FAIL for: held-out accuracy > 0.6 (and, as a significance check, the interval's lower end > 0.5).
The exit code is 0 whatever the accuracy (a report, not a test).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.bench_ppo_quality as ppo_quality  # noqa: E402  (the same preferences as the PPO benchmark)

GOAL = 0.6
# The data folder holds HH helpful-base's test split only; the PPO benchmark names a train file that is not there.
HH_FALLBACK = "anthropic-hh-rlhf/helpful-base/test.jsonl.gz"


def prepare(workdir: Path, rows: int, heldout: int, seed: int) -> tuple[Path, list[int]]:
    """``bench_ppo_quality.prepare``, on its HH file when it exists, else on helpful-base's test split."""
    from bench.real_data import real_data_dir

    if not (real_data_dir() / ppo_quality.HH_TRAIN).is_file():
        print(f"note: {ppo_quality.HH_TRAIN} is not in {real_data_dir()}; using {HH_FALLBACK} "
              "(the same file for the PPO benchmark would need the same change)", flush=True)
        ppo_quality.HH_TRAIN = HH_FALLBACK
    return ppo_quality.prepare(workdir, rows, heldout, seed)


def train_minutes(data: dict) -> float | None:
    """Training time so far from a metrics event (optimizer steps only, as the job counts it)."""
    tokens, tps = data.get("train/tokens"), data.get("train/tokens_per_s")
    if not tokens or not tps:
        return None
    return float(tokens) / float(tps) / 60.0


def follow(handle, minutes: float) -> tuple[dict, dict[int, float]]:
    """Drain the run's events, cancelling (checkpoint first) once ``minutes`` of training time have passed.
    Returns the last done/status data and the training minutes at each reported step."""
    from workbench.jobs.protocol import EventType

    t0 = time.time()
    cancelled = False
    last: dict = {}
    at_step: dict[int, float] = {}
    for ev in handle.events():
        if ev.type == EventType.METRICS and ev.step is not None:
            m = train_minutes(ev.data)
            if m is not None:
                at_step[ev.step] = m
                if ev.step % 10 == 0:
                    print(f"  step {ev.step}: {m:.1f} min of training ({(time.time() - t0) / 60:.1f} min wall), "
                          f"loss {ev.data.get('train/loss', float('nan')):.4f}, "
                          f"train accuracy {ev.data.get('rewards/accuracy', float('nan')):.3f}", flush=True)
                if not cancelled and m >= minutes:
                    print(f"  training budget of {minutes} min reached at step {ev.step}: cancelling "
                          "(checkpoint first)", flush=True)
                    handle.cancel(3600)
                    cancelled = True
            if "heldout/accuracy" in ev.data:
                d = ev.data
                print(f"  held-out at step {ev.step}: accuracy {d['heldout/accuracy']:.3f} "
                      f"[{d['heldout/accuracy_low']:.3f}, {d['heldout/accuracy_high']:.3f}], "
                      f"{int(d['heldout/ties'])} ties, margin {d['heldout/margin']:.4f}", flush=True)
        elif ev.type == EventType.LOG:
            print(f"  [job] {ev.data.get('message')}", flush=True)
        elif ev.type == EventType.ERROR:
            raise SystemExit(f"dpo failed: {ev.data.get('message')}")
        elif ev.type in (EventType.DONE, EventType.STATUS):
            last = ev.data
    last["wall_minutes"] = round((time.time() - t0) / 60, 2)
    return last, at_step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2400, help="HH-RLHF helpful-base train rows imported")
    ap.add_argument("--heldout", type=int, default=400, help="prompts held out (at most rows/5)")
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget (evaluation not counted)")
    ap.add_argument("--eval-every", type=int, default=40, help="optimizer steps between held-out evaluations")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-top-layers", type=int, default=None,
                    help="LoRA on the top N transformer layers only (the backward stops below them; more pairs a minute)")
    ap.add_argument("--epochs", type=float, default=1.0, help="length of the LR schedule (the budget may end first)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the worker (default: cores - 1)")
    ap.add_argument("--base", default="bundled:SmolLM2-135M-Instruct", help="base model (another one for a smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from bench.machine import describe
    from engine import checkpoints as ckpt
    from engine.trainers.dpo import HELDOUT_FILE, evaluate_preferences
    from workbench.configs import DpoConfig
    from workbench.jobs.client import JobClient
    from workbench.store import Project

    work = Path(tempfile.mkdtemp(prefix="bench-dpo-quality-"))
    project_path, held = prepare(work, args.rows, args.heldout, args.seed)
    with Project.open(project_path) as p:
        n_train = len(p.prompt_ids(split="train"))
    print(f"project {project_path}: {n_train} training prompts, {len(held)} held-out prompts", flush=True)

    steps = max(1, math.ceil(args.epochs * n_train / args.batch_size))
    cfg = DpoConfig(base_model=args.base, lr=args.lr, beta=args.beta, batch_size=args.batch_size,
                    max_length=args.max_length,
                    lora_r=args.lora_r, lora_alpha=2 * args.lora_r, lora_top_layers=args.lora_top_layers,
                    max_steps=steps, warmup_ratio=0.05,
                    eval_fraction=0.0, eval_every=args.eval_every, checkpoint_every=0, seed=args.seed,
                    num_threads=args.threads, device="cpu", dtype="float32", quantize="none", name="bench dpo quality")
    client = JobClient(project_path)
    handle = client.start("dpo", cfg)
    info, minutes_at = follow(handle, args.minutes)
    held_file = handle.run_dir / HELDOUT_FILE
    held_sid_text = held_file.read_text().strip() if held_file.is_file() else ""
    if not held_sid_text:
        raise SystemExit("the run recorded no held-out snapshot (no judged pairs on held-out prompts?)")
    held_sid = int(held_sid_text)

    with Project.open(project_path) as p:
        run = p.get_run(handle.run_id)
        series = {k: {s: v for s, _, v in p.metrics(handle.run_id, k)}
                  for k in ("heldout/accuracy", "heldout/accuracy_low", "heldout/accuracy_high", "heldout/ties",
                            "heldout/pairs", "heldout/margin", "train/loss", "rewards/accuracy")}
    status = handle.status or run["status"]
    final_step = max(minutes_at) if minutes_at else 0
    if status == "done":
        fm = run["final_metrics"] or {}
        after = {k.removeprefix("heldout/"): v for k, v in fm.items() if k.startswith("heldout/")}
    else:
        last = ckpt.latest_checkpoint(handle.run_dir / "checkpoints")
        if last is None:
            raise SystemExit(f"the run ended {status} without a checkpoint to evaluate")
        print(f"scoring the held-out pairs with {last / 'adapter'} (evaluation, not counted) ...", flush=True)
        t0 = time.time()
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
        after = evaluate_preferences(project_path, last / "adapter", snapshot_id=held_sid, cfg=cfg)
        print(f"  done in {(time.time() - t0) / 60:.1f} min", flush=True)
        final_step = int(json.loads((last / "state.json").read_text())["step"])
    before = {k.removeprefix("heldout/"): series[k].get(0) for k in series if k.startswith("heldout/")}

    print("== DPO quality: held-out preference accuracy (implicit reward) ==")
    print(f"machine: {describe()}")
    print(f"setting: {args.base} fp32 CPU; {args.rows} HH helpful-base train rows, {n_train} training prompts, "
          f"{int(after.get('pairs', 0))} held-out pairs (snapshot {held_sid}); DPO sigmoid, beta {args.beta}, "
          f"lr {args.lr}, LoRA r={args.lora_r} all-linear on {args.lora_top_layers or 'all'} layers, "
          f"batch {args.batch_size}, max length {args.max_length}; "
          f"budget {args.minutes} min of training; run {handle.run_id} ended {status} at step {final_step} after "
          f"{minutes_at.get(final_step, max(minutes_at.values(), default=0.0)):.1f} training min "
          f"({info.get('wall_minutes')} wall min)")
    print("ties count as half a correct pair (a tie: implicit-reward difference within 1e-6)")
    print("curve (step, training min, held-out accuracy [95% interval], ties, train loss, train accuracy):")
    for s in sorted(series["heldout/accuracy"]):
        m = 0.0 if s == 0 else minutes_at.get(s, float("nan"))
        print(f"  {s:5d} {m:6.1f}  {series['heldout/accuracy'][s]:.3f} [{series['heldout/accuracy_low'][s]:.3f}, "
              f"{series['heldout/accuracy_high'][s]:.3f}]  {int(series['heldout/ties'][s]):4d}  "
              f"{series['train/loss'].get(s, float('nan')):.4f}  {series['rewards/accuracy'].get(s, float('nan')):.3f}")
    if status != "done" and final_step not in series["heldout/accuracy"]:
        print(f"  {final_step:5d} {minutes_at.get(final_step, float('nan')):6.1f}  {after['accuracy']:.3f} "
              f"[{after['accuracy_low']:.3f}, {after['accuracy_high']:.3f}]  {int(after['ties']):4d}  (checkpoint)")
    if before.get("accuracy") is not None:
        print(f"before (step 0): {before['accuracy']:.3f} [{before['accuracy_low']:.3f}, {before['accuracy_high']:.3f}]"
              f", {int(before['ties'])} of {int(before['pairs'])} pairs tied (the policy is the reference)")
    print(f"after: {after['accuracy']:.3f} [{after['accuracy_low']:.3f}, {after['accuracy_high']:.3f}], "
          f"{int(after['ties'])} ties, mean implicit-reward margin {after['margin']:.4f}")
    print(f"held-out accuracy {after['accuracy']:.3f} > {GOAL}: {'PASS' if after['accuracy'] > GOAL else 'FAIL'}; "
          f"interval lower end {after['accuracy_low']:.3f} > 0.5: {'yes' if after['accuracy_low'] > 0.5 else 'no'}")
    if args.json:
        print(json.dumps({"before": before, "after": after, "status": status, "final_step": final_step,
                          "train_minutes": minutes_at.get(final_step), "curve": {
                              k: sorted(v.items()) for k, v in series.items()}, "pass": after["accuracy"] > GOAL}))
    print(f"(scratch folder {work} left in place for inspection; delete it when done)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
