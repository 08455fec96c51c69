"""Which reward-model batch layout is faster on this CPU: the prompt encoded once per pair, or twice?

    .venv/bin/python bench/bench_rm_layout.py [--steps 4] [--max-length 256] [--batch-size 8] [--threads 1]

Each layout trains the same LoRA reward model (bundled SmolLM2, r=16 all-linear, fp32) for ``--steps`` steps of
``--batch-size`` HH-RLHF helpful-base pairs (imported with our importer), in a fresh process so its peak memory is
its own:

- ``packed``: the default; pairs packed without padding, each pair's prompt encoded once (``wb_pairs`` attention);
- ``packed-twice``: the same packing, but each conversation whole, so the prompt runs twice;
- ``padded``: chosen and rejected as rows of one right-padded batch with ordinary (masked SDPA) attention.

Tokens/s counts the real tokens of both conversations of each pair (prompt twice, no padding) for every layout,
so the figures compare directly. Each layout runs in its own process, one after the other, so on a shared machine
the timings follow the other jobs' load; the peak memory does not.

Measured here (2-core CPU, 1 thread, SmolLM2, max length 256, HH-RLHF helpful-base):

- this script, batch 4, 2 timed steps, other jobs running at a steady load of ~6.6: packed 96.4 tokens/s (peak
  3.7 GB), packed-twice 72.5 (4.9 GB), padded 41.1 (8.0 GB); an earlier run while the load swung from ~12 to ~6
  gave nonsense timings (padded first) but the same memory order;
- the same 4 pairs in one process, layouts interleaved (fair timing; second round): forward + backward packed
  10.4 s, packed-twice 15.7 s, padded 17.9 s; forward only 4.1 s, 7.5 s, 7.2 s. Tokens computed: packed 1083,
  packed-twice 1576, padded 1968 (incl. padding).
- On 400 pairs each of helpful-base and harmless-base, the shared prompt leaves 63-68 % of the tokens to compute
  (max length 512 and 256).

So ``packed`` (prompt once) is the default: 1.7–2.3× the padded layout's speed at less than half its memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LAYOUTS = ("packed", "packed-twice", "padded")


def one(layout: str, args: argparse.Namespace) -> dict[str, float]:
    import torch

    from engine.losses import bradley_terry_loss
    from engine.lora import enable_gradient_checkpointing
    from engine.pair_attention import pairs_attention
    from engine.rm_data import ChatEncoder, collate_pairs, pad_token_id
    from engine.trainers.reward import PairRewards, build_reward_model
    from workbench.configs import RewardConfig
    from workbench.importers import import_file
    from bench.real_data import real_data_dir
    from workbench.store import Project
    from workbench.training_data import preference_pairs, preference_snapshot

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = RewardConfig(max_length=args.max_length, batch_size=args.batch_size, lora_r=16, lora_alpha=32,
                       lora_dropout=0.0, device="cpu", dtype="float32", quantize="none",
                       gradient_checkpointing=args.gradient_checkpointing)
    hm, tok = build_reward_model(cfg, torch.device("cpu"))
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(hm.transformer())
    with tempfile.TemporaryDirectory() as d, Project.create(Path(d) / "p.wbp") as project:
        import_file(project, real_data_dir() / "anthropic-hh-rlhf/helpful-base/test.jsonl.gz", "hh-rlhf")
        sid = preference_snapshot(project)
        raw = preference_pairs(project, sid)[: (args.steps + 1) * args.batch_size]
    encoder = ChatEncoder(tok, cfg.max_length)
    pairs = [encoder.encode(p.prompt, p.chosen, p.rejected, margin=p.margin) for p in raw]
    scorer = PairRewards(hm)
    opt = torch.optim.AdamW([p for p in hm.parameters() if p.requires_grad], lr=1e-4)
    n = args.batch_size
    tokens, t_total = 0, 0.0
    for step in range(args.steps + 1):
        chunk = pairs[step * n:(step + 1) * n]
        if layout == "padded":
            batch = collate_pairs(chunk, pad_token_id(tok), "padded")
        else:
            batch = collate_pairs(chunk, layout="packed", share_prompt=layout == "packed")
        t0 = time.perf_counter()
        with pairs_attention(hm.transformer()):
            rc, rr = scorer(batch)
            loss = bradley_terry_loss(rc, rr, batch.margin).loss
            opt.zero_grad()
            loss.backward()
        opt.step()
        if step > 0:  # the first step warms up allocators and kernels
            t_total += time.perf_counter() - t0
            tokens += batch.n_tokens
    return {"layout": layout, "tokens_per_s": round(tokens / t_total, 1), "seconds": round(t_total, 1),
            "tokens": tokens, "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--one", choices=LAYOUTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args)))
        return 0
    results = []
    for layout in args.layouts.split(","):
        cmd = [sys.executable, __file__, "--one", layout, "--steps", str(args.steps), "--max-length",
               str(args.max_length), "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
        if args.gradient_checkpointing:
            cmd.append("--gradient-checkpointing")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{layout}: failed\n{proc.stderr[-2000:]}")
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f"{layout:13s} {res['tokens_per_s']:8.1f} tokens/s  peak {res['peak_mem_mb']:8.1f} MB  "
              f"({res['tokens']} tokens in {res['seconds']} s)", flush=True)
    if results:
        best = max(results, key=lambda r: r["tokens_per_s"])
        for r in results:
            print(f"{r['layout']:13s} {r['tokens_per_s'] / best['tokens_per_s']:.2f}× the fastest ({best['layout']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
