"""The TRL side of the training benchmarks: ``SFTTrainer`` or ``RewardTrainer`` (TRL 1.x) with their default
settings, except what must match our side. Meant to run in its own fresh process (``bench.common.run_side``), so
its peak resident memory is its own.

    python -m bench.peer_trl sft|rm --data FILE.jsonl --steps N --warmup W [--batch-size 8] [--max-length 512]

Matched with our side: the bundled SmolLM2 folder in fp32 (``bf16=False``: TRL would otherwise default to bf16),
the CPU, batch size, max length, the LoRA adapter (r, and our default alpha and dropout, all linear layers), the number of
optimizer steps, no evaluation, no saving, no reporting, torch threads and niceness. Everything else is TRL's
default (notably gradient checkpointing on, logging every 10 steps, TRL's per-step metrics such as entropy and
token accuracy; ``--gradient-checkpointing off`` measures without it).

Timing: a callback notes the time and TRL's own count of real (non-padding) tokens, ``_total_train_tokens``, at the
end of every optimizer step (and the process's CPU time); tokens/s runs from the end of the warm-up steps to the end of the last step. Prints
one JSON line: tokens, seconds, tokens_per_s, peak_rss_mb, wall_s, and the step marks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import peak_rss_mb, steady_rate  # noqa: E402



def _our_lora_defaults() -> tuple[int, float]:
    """Our LoRA alpha and dropout defaults (workbench.configs), given to TRL too so the adapters match."""
    from workbench.configs import BaseRunConfig

    d = BaseRunConfig()
    return d.lora_alpha, d.lora_dropout


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("sft", "rm"))
    ap.add_argument("--data", required=True, help="TRL JSONL exported by workbench (trl-sft or trl-preference)")
    ap.add_argument("--steps", type=int, required=True, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--gradient-checkpointing", choices=("default", "on", "off"), default="default")
    args = ap.parse_args(argv)

    if args.nice:
        os.nice(args.nice)
    import torch

    torch.set_num_threads(args.threads)
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from workbench.paths import bundled_model_dir

    model_path = str(bundled_model_dir())
    lora_alpha, lora_dropout = _our_lora_defaults()
    dataset = load_dataset("json", data_files=args.data, split="train")
    total_steps = args.warmup + args.steps
    marks: list[tuple[int, float, float]] = []

    class StepMarks(TrainerCallback):
        trainer = None

        def on_step_end(self, _args, state, control, **kw):
            marks.append((state.global_step, time.perf_counter(), float(self.trainer._total_train_tokens),
                          time.process_time()))

    out_dir = tempfile.mkdtemp(prefix="bench-trl-")  # TRL wants one; nothing is saved into it
    common = dict(
        output_dir=out_dir,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=total_steps,
        bf16=False,
        fp16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        model_init_kwargs={"dtype": torch.float32},
        disable_tqdm=True,
    )
    if args.gradient_checkpointing != "default":
        common["gradient_checkpointing"] = args.gradient_checkpointing == "on"
    callback = StepMarks()
    if args.kind == "sft":
        from trl import SFTConfig, SFTTrainer

        peft = LoraConfig(r=args.lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model_path, args=SFTConfig(**common), train_dataset=dataset, peft_config=peft,
                             callbacks=[callback])
    else:
        from trl import RewardConfig, RewardTrainer

        # SEQ_CLS: peft keeps the fresh score head trainable (modules_to_save), as our reward head is.
        peft = LoraConfig(r=args.lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules="all-linear", task_type="SEQ_CLS")
        trainer = RewardTrainer(model=model_path, args=RewardConfig(**common), train_dataset=dataset,
                                peft_config=peft, callbacks=[callback])
    callback.trainer = trainer
    kept = len(trainer.train_dataset)
    t_train = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t_train
    rate = steady_rate(marks, args.warmup)
    result = {
        "side": "trl", "kind": args.kind, **rate, "peak_rss_mb": peak_rss_mb(),
        "wall_s": round(time.perf_counter() - started, 1), "train_wall_s": round(train_wall, 1),
        "examples": kept, "examples_given": len(dataset), "steps": marks[-1][0] if marks else 0,
        "threads": torch.get_num_threads(),
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
        "marks": [(s, round(t - t_train, 3), k, round(c, 2)) for s, t, k, c in marks],
    }
    if kept != len(dataset):
        result["note"] = f"TRL kept {kept} of {len(dataset)} examples"
    shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
