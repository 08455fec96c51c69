"""Reward-model speed and peak memory, whole process: ``workbench train rm`` against TRL's ``RewardTrainer``, each
in a fresh process, on the same pairs for one epoch.

    python -m bench.bench_rm_vs_trl [--steps 10] [--warmup 2] [--quick] [--only ours|trl]
                                    [--ours-set KEY=VALUE ...] [--keep] [--json]

Setting: the bundled SmolLM2-135M-Instruct, LoRA r=16 on all linear layers (plus a scalar head on each side),
batch 8 pairs, max length 512, fp32 on the CPU, one epoch of batch × (warm-up + timed steps) pairs (96 by default),
TRL with its default settings except what must match (``bench.peer_trl``). Data: HH-RLHF helpful-base test rows
imported with our importer; the first pairs whose chosen and rejected conversations both fit max length (TRL drops
longer pairs, we would truncate them: only pairs that fit give both sides the same examples), exported as
``trl-preference`` JSONL. TRL trains on that file; our side imports the same file into a fresh project (``workbench
import --format trl``) and runs ``workbench train rm PROJECT --epochs 1 --batch-size 8 --max-length 512 --lora-r 16``
with a config file for the rest (fp32 on the CPU, no evaluation split, no checkpoints, threads).

Figures (``bench.common``): each side's whole-process wall time, CPU time and peak RSS (GNU ``time``; ours: the
largest process, the worker), and the steady tokens/s after the warm-up steps (real tokens of both conversations of
each pair, the prompt counted twice as TRL's ``num_tokens`` counts it). Targets: whole-process speed at least 2.5×
TRL's, peak RSS at most 0.5× TRL's. The exit code is 0 whatever the outcome (a report).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    add_common_options, import_for_ours, ours_settings, prepare_hh, print_report, resolve_quick, rows_needed,
    run_ours_cli, run_side,
)

SPEED_TARGET, MEMORY_TARGET = 2.5, 0.5


def main(argv: list[str] | None = None) -> int:
    from workbench.configs import RewardConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(ap)
    args = ap.parse_args(argv)
    resolve_quick(args)
    work = Path(tempfile.mkdtemp(prefix="bench-rm-vs-trl-"))
    try:
        n = rows_needed(args)
        data = prepare_hh(work, n, args.max_length)
        shared = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
                  "--max-length", str(args.max_length), "--lora-r", str(args.lora_r), "--threads", str(args.threads)]
        ours = trl = None
        if args.only != "trl":
            project = import_for_ours(work, data.pref_jsonl, "ours-rm")
            cfg = RewardConfig(device="cpu", dtype="float32", quantize="none", eval_fraction=0.0, checkpoint_every=0,
                               log_every=1, num_threads=args.threads, name="bench vs TRL", **ours_settings(args))
            ours = run_ours_cli("rm", project, cfg, work, args, nice=args.nice)
        if args.only != "ours":
            trl = run_side("bench.peer_trl", ["rm", "--data", data.pref_jsonl, "--nice", str(args.nice),
                                              "--gradient-checkpointing", args.trl_gradient_checkpointing, *shared])
        note = (f"{data.pairs} HH helpful-base pairs (the first {data.pairs} within {args.max_length} tokens; "
                f"{data.pairs_too_long} longer ones skipped), one epoch per side"
                + (f"; ours with {ours_settings(args)}" if args.ours_set else ""))
        print_report("Reward model: ours vs TRL RewardTrainer", args, data, ours, trl, speed_target=SPEED_TARGET,
                     memory_target=MEMORY_TARGET, data_note=note)
        if args.keep:
            print(f"scratch folder kept: {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
