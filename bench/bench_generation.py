"""Batched generation against one sequence at a time, on the bundled SmolLM2 (CPU, fp32).

Both runs sample the same responses (our sampler is batch-independent: each row has its own seeded generator),
so they generate the same tokens and the figures compare like with like. Tokens are counted without padding, up
to and including each response's end-of-sequence token. Target: batched at least 3x one-at-a-time.

    python bench/bench_generation.py [--prompts 16] [--batch-size 16] [--max-new-tokens 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = [
    "Write a haiku about autumn leaves.",
    "What is the capital of Australia?",
    "Explain what a binary search does, in two sentences.",
    "Give me three tips for sleeping better.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
    "Write a Python function that reverses a string.",
    "Why is the sky blue?",
    "Suggest a name for a friendly robot.",
    "What is 17 times 3?",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "List four fruits that are red.",
    "What does HTTP stand for?",
    "Describe a cat to someone who has never seen one.",
    "How do I boil an egg?",
    "Give me a short motivational quote.",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model", default=None, help="model reference (default: the bundled SmolLM2)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = ap.parse_args(argv)

    import torch

    from bench.machine import describe
    from engine.generation import GenerationSettings, GenerationStats, generate
    from engine.models import load_model
    from workbench.paths import BUNDLED_MODEL_REF

    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(args.model or BUNDLED_MODEL_REF, device="cpu", dtype="float32", quantize="none")
    convs = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(args.prompts)]
    base = dict(max_new_tokens=args.max_new_tokens, n=1, seed=0, temperature=0.8, top_p=0.95, top_k=50)

    # Warm-up (first call pays for lazy initialisation in torch and transformers).
    generate(lm.model, lm.tokenizer, convs[:2], GenerationSettings(**base | {"max_new_tokens": 4, "batch_size": 2}))

    figures = {}
    outputs = {}
    for name, bs in (("one_at_a_time", 1), ("batched", args.batch_size)):
        stats = GenerationStats()
        t0 = time.perf_counter()
        gens = generate(lm.model, lm.tokenizer, convs, GenerationSettings(**base | {"batch_size": bs}), stats=stats)
        wall = time.perf_counter() - t0
        outputs[name] = [g.text for g in gens]
        figures[name] = {"tokens": stats.new_tokens, "seconds": round(wall, 2), "tokens_per_s": round(stats.new_tokens / wall, 1)}
    same = sum(a == b for a, b in zip(outputs["one_at_a_time"], outputs["batched"]))
    ratio = figures["batched"]["tokens_per_s"] / figures["one_at_a_time"]["tokens_per_s"]
    result = {
        "bench": "generation", "model": lm.model_id, "machine": describe(), "threads": torch.get_num_threads(),
        "prompts": args.prompts, "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        **{f"{k}_{m}": v for k, f in figures.items() for m, v in f.items()},
        "speedup": round(ratio, 2), "identical_responses": f"{same}/{len(convs)}", "target_speedup": 3.0,
        "pass": ratio >= 3.0,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"machine: {result['machine']} (torch threads {result['threads']})")
        print(f"model: {lm.model_id}, {args.prompts} prompts, max {args.max_new_tokens} new tokens, fp32 CPU")
        for k, f in figures.items():
            print(f"  {k:14s} {f['tokens']:6d} tokens in {f['seconds']:7.2f} s = {f['tokens_per_s']:7.1f} tokens/s")
        print(f"  speedup {ratio:.2f}x (target >= 3x): {'PASS' if ratio >= 3 else 'FAIL'}; "
              f"identical responses {same}/{len(convs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
