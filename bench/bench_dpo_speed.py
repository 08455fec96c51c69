"""DPO tokens/s: our ``dpo`` job against TRL 1.16's ``DPOTrainer`` on the same HH pairs (target: ours ≥ 1.3×).

    python -m bench.bench_dpo_speed [--steps 10] [--warmup 2] [--batch-size 8] [--max-length 512] [--quick] [--json]

Data: ``bench.common.prepare_hh`` (HH-RLHF pairs that fit ``max_length``, one epoch = warm-up + timed steps).
Each side runs in a fresh process (peak RSS is its own). Settings matched: bundled SmolLM2 in fp32 on the CPU,
LoRA r (alpha 32, dropout 0.05, all linear layers), batch size, max length, beta 0.1, sigmoid loss, optimizer steps,
no eval, no saving, torch threads, niceness. TRL keeps its defaults otherwise (reference log-probabilities computed
at every step with the adapter disabled; gradient checkpointing on unless ``--trl-gradient-checkpointing off``).

Tokens: both full conversations of every pair (prompt counted twice), no padding, counted with the same chat
template for both sides. Rate: all tokens of the epoch over the whole training time, warm-up included, and for our
side *including* the one-off reference pass (our reference log-probabilities are computed once before training, so
leaving that pass out would flatter us); ``steady_tokens_per_s`` (ours, after warm-up, without the reference
pass) is printed as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_common_options, peak_rss_mb, prepare_hh, print_report, resolve_quick, rows_needed, run_side  # noqa: E402

LORA_ALPHA, LORA_DROPOUT = 32, 0.05


def _pair_tokens(jsonl: str, max_length: int) -> int:
    from transformers import AutoTokenizer

    from engine.rm_data import ChatEncoder
    from workbench.paths import bundled_model_dir

    enc = ChatEncoder(AutoTokenizer.from_pretrained(str(bundled_model_dir())), max_length)
    total = 0
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
            chosen = row["chosen"][-1]["content"] if isinstance(row["chosen"], list) else row["chosen"]
            rejected = row["rejected"][-1]["content"] if isinstance(row["rejected"], list) else row["rejected"]
            total += enc.encode(prompt, chosen, rejected).n_tokens
    return total


def side_ours(args: argparse.Namespace) -> dict:
    from workbench.configs import DpoConfig
    from workbench.jobs.client import JobClient
    from workbench.jobs.protocol import EventType

    if args.nice:
        os.nice(args.nice)
    cfg = DpoConfig(base_model="bundled:SmolLM2-135M-Instruct", device="cpu", dtype="float32", quantize="none",
                    snapshot_id=args.snapshot, batch_size=args.batch_size, max_length=args.max_length,
                    lora_r=args.lora_r, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                    max_steps=args.warmup + args.steps, eval_fraction=0.0, checkpoint_every=0, beta=0.1,
                    loss_type="sigmoid", num_threads=args.threads, min_examples=1)
    client = JobClient(args.project)
    handle = client.start("dpo", cfg)
    marks, summary = [], {}
    for ev in handle.events():
        if ev.type == EventType.PROGRESS:
            marks.append((ev.step, time.perf_counter(), float(ev.data.get("tokens", 0))))
        elif ev.type == EventType.DONE:
            summary = ev.data.get("summary", {})
        elif ev.type == EventType.ERROR:
            raise SystemExit(ev.data.get("message"))
    import resource

    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    from bench.common import steady_rate

    steady = steady_rate(marks, args.warmup)
    seconds = float(summary["train_s"]) + float(summary["reference_s"])
    tokens = float(summary["tokens"])
    return {"side": "ours", "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "timed_steps": int(summary["steps"]), "steady_tokens_per_s": steady["tokens_per_s"],
            "reference_s": summary["reference_s"], "peak_rss_mb": round(max(child_peak, summary.get("peak_mem_mb", 0)), 1),
            "note": f"reference pass {summary['reference_s']} s included; steady {steady['tokens_per_s']} tok/s"}


def side_trl(args: argparse.Namespace) -> dict:
    if args.nice:
        os.nice(args.nice)
    import torch

    torch.set_num_threads(args.threads)
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from workbench.paths import bundled_model_dir

    dataset = load_dataset("json", data_files=args.data, split="train")
    times: list[float] = []

    class Marks(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            times.append(time.perf_counter())

        def on_step_end(self, *_a, **_k):
            times.append(time.perf_counter())

    common = dict(output_dir=tempfile.mkdtemp(prefix="bench-trl-dpo-"), per_device_train_batch_size=args.batch_size,
                  max_length=args.max_length, max_steps=args.warmup + args.steps, bf16=False, fp16=False, use_cpu=True,
                  report_to="none", save_strategy="no", eval_strategy="no", model_init_kwargs={"dtype": torch.float32},
                  disable_tqdm=True, beta=0.1)
    if args.trl_gradient_checkpointing != "default":
        common["gradient_checkpointing"] = args.trl_gradient_checkpointing == "on"
    peft = LoraConfig(r=args.lora_r, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=str(bundled_model_dir()), args=DPOConfig(**common), train_dataset=dataset,
                         peft_config=peft, callbacks=[Marks()])
    trainer.train()
    tokens = _pair_tokens(args.data, args.max_length)
    seconds = times[-1] - times[0]
    return {"side": "trl", "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "timed_steps": len(times) - 1, "peak_rss_mb": peak_rss_mb(),
            "gradient_checkpointing": bool(trainer.args.gradient_checkpointing)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(ap)
    ap.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--project", help=argparse.SUPPRESS)
    ap.add_argument("--snapshot", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    resolve_quick(args)
    if args.side:
        print(json.dumps(side_ours(args) if args.side == "ours" else side_trl(args)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    data = prepare_hh(work, rows_needed(args), args.max_length)
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
              "--max-length", str(args.max_length), "--lora-r", str(args.lora_r), "--threads", str(args.threads),
              "--nice", str(args.nice), "--trl-gradient-checkpointing", args.trl_gradient_checkpointing]
    ours = trl = None
    if args.only in (None, "ours"):
        ours = run_side("bench.bench_dpo_speed", [*common, "--side", "ours", "--project", data.project,
                                                  "--snapshot", str(data.pref_snapshot)])
    if args.only in (None, "trl"):
        trl = run_side("bench.bench_dpo_speed", [*common, "--side", "trl", "--data", data.pref_jsonl])
    print_report("DPO: ours vs TRL DPOTrainer", args, data, ours, trl, tokens_target=1.3,
                 data_note=f"{data.pairs} HH-RLHF pairs that fit max length (one epoch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
