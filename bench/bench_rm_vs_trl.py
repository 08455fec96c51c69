"""Reward-model throughput and peak memory: our ``rm`` job against TRL's ``RewardTrainer`` on the same pairs.

Each side runs in a fresh process, so each peak resident memory (``ru_maxrss``) is that side's own.

    .venv/bin/python -m bench.bench_rm_vs_trl [--steps 10] [--warmup 2] [--quick] [--json]

Setting (issue 4, Performance): the bundled SmolLM2-135M-Instruct, LoRA r=16 on all linear layers (plus a scalar
head on each side), batch 8 pairs, max length 512, fp32 on the CPU, TRL with its default settings except what must
match. Data: HH-RLHF helpful-base test rows imported with our importer; the first pairs whose chosen and rejected
conversations both fit max length (TRL drops longer pairs, we would truncate them: only pairs that fit give both
sides the same examples) are frozen into a preference snapshot, exported as ``trl-preference`` JSONL for TRL, and
our job trains on the snapshot (``bench.common.prepare_hh``). One epoch: batch × (warm-up + timed steps) pairs.
Tokens: real tokens of both conversations of each pair (the prompt counted twice, as TRL's ``num_tokens`` counts
it), no padding, over the timed steps.

Targets: our tokens/s at least 1.5× TRL's; our peak resident memory no higher than TRL's. Prints the machine line,
each side's tokens/s, peak RSS and wall time, and the ratios; the exit code is 0 whatever the outcome (a report).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_options, prepare_hh, print_report, resolve_quick, rows_needed, run_side  # noqa: E402

SPEED_TARGET = 1.5


def main(argv: list[str] | None = None) -> int:
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
            ours = run_side("bench.ours_job", ["rm", "--project", data.project, "--snapshot", str(data.pref_snapshot),
                                               *shared])
        if args.only != "ours":
            trl = run_side("bench.peer_trl", ["rm", "--data", data.pref_jsonl, "--nice", str(args.nice),
                                              "--gradient-checkpointing", args.trl_gradient_checkpointing, *shared])
        note = (f"{data.pairs} HH helpful-base pairs (the first {data.pairs} within {args.max_length} tokens; "
                f"{data.pairs_too_long} longer ones skipped), one epoch per side")
        print_report("Reward model: ours vs TRL RewardTrainer", args, data, ours, trl, speed_target=SPEED_TARGET,
                     data_note=note)
        if args.keep:
            print(f"scratch folder kept: {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
