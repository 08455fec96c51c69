"""The TRL side of the online-RL benchmarks: TRL 1.x's ``RLOOTrainer`` on a prompt file, with a rule reward or a
sequence-classification reward model. Meant to run in its own fresh process (under GNU ``time`` for the peak RSS).

    python -m bench.peer_rloo --prompts FILE.jsonl (--rule-word WORD | --reward-model DIR) --steps N
                              [--samples-per-prompt 4] [--prompts-per-step 4] [--max-new-tokens 32] [--lora-r 16]
                              [--lr 1e-6] [--beta 0.05] [--minutes M] [--save DIR] [--threads T] [--nice N]

Settings matched with our side (``bench.bench_rl_vs_trl``): the bundled SmolLM2 folder in fp32 on the CPU (TRL would
default to bf16), k responses per prompt (``num_generations``), prompts per optimizer step
(``per_device_train_batch_size`` = prompts × k, one optimizer step per generation batch, ``num_iterations`` 1),
response length (``max_completion_length``), sampling (temperature 1, top-p 1, top-k 0: TRL's defaults), LoRA (r,
our alpha 32 and dropout 0, all linear layers), the KL coefficient ``beta`` (fixed in TRL), the learning rate, torch
threads and niceness. The prompt file is read in order (``shuffle_dataset`` off, unless ``--shuffle``): the speed
benchmark writes it in the order our job draws its prompts, so step s of both sides answers the same prompts. Everything else is TRL's default
(gradient checkpointing on, no advantage normalisation, no reward clipping).

Timing: the trainer's own methods are wrapped. ``sample`` is ``_generate`` (tokenising, sampling and decoding the
completions); ``score`` is the rest of ``_generate_and_score_completions`` (policy and reference log-probabilities,
the reward, advantages); ``update`` the rest of the optimizer step (the loss's forward and backward, the optimizer).
``--minutes`` stops training that long after the process started (a callback ends the run at the next step
boundary), for the quality benchmark; ``--save`` then writes the adapter there. Prints one JSON line: per-step phases, wall and
process time, the reward per step, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", required=True, help='JSONL, one {"prompt": [messages]} per line, in step order')
    reward = ap.add_mutually_exclusive_group(required=True)
    reward.add_argument("--rule-word", help="reward +1 when the reply contains this word (case-insensitive)")
    reward.add_argument("--reward-model", help="a sequence-classification model folder (workbench export-model --format hf)")
    ap.add_argument("--steps", type=int, required=True, help="optimizer steps (each one generation batch)")
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--minutes", type=float, default=None, help="stop training after this many minutes")
    ap.add_argument("--shuffle", action="store_true", help="shuffle the prompts (default: read them in file order)")
    ap.add_argument("--save", help="write the trained adapter into this folder")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--nice", type=int, default=10)
    args = ap.parse_args(argv)

    if args.nice:
        os.nice(args.nice)
    import torch

    torch.set_num_threads(args.threads)
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    from workbench.paths import bundled_model_dir

    dataset = load_dataset("json", data_files=args.prompts, split="train")
    k = args.samples_per_prompt

    if args.rule_word:
        word = args.rule_word.lower()

        def contains_word(completions, **_kw):
            return [1.0 if word in c[-1]["content"].lower() else 0.0 for c in completions]

        reward_funcs = contains_word
    else:
        reward_funcs = args.reward_model

    out_dir = tempfile.mkdtemp(prefix="bench-trl-rloo-")
    config = RLOOConfig(
        output_dir=out_dir, per_device_train_batch_size=args.prompts_per_step * k, gradient_accumulation_steps=1,
        num_generations=k, max_completion_length=args.max_new_tokens, max_steps=args.steps, learning_rate=args.lr,
        beta=args.beta, num_iterations=1, temperature=1.0, top_p=1.0, top_k=0, shuffle_dataset=args.shuffle, seed=args.seed,
        bf16=False, fp16=False, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1,
        disable_tqdm=True, model_init_kwargs={"dtype": torch.float32},
    )
    peft = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    phases: list[dict[str, float]] = []
    current: dict[str, float] = {}
    marks: list[float] = []
    rewards: list[float] = []
    deadline = started + args.minutes * 60 if args.minutes else None  # from the process's start, loading included

    class Marks(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            marks.append(time.perf_counter())

        def on_step_end(self, _args, state, control, **_kw):
            marks.append(time.perf_counter())
            if deadline is not None and marks[-1] > deadline:
                control.should_training_stop = True

        def on_log(self, _args, state, control, logs=None, **_kw):
            if logs and "reward" in logs:
                rewards.append(float(logs["reward"]))

    trainer = RLOOTrainer(model=str(bundled_model_dir()), reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                          peft_config=peft, callbacks=[Marks()])

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                current[name] = current.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    generate = trainer._generate
    trainer._generate = timed("sample", generate)
    gen_and_score = trainer._generate_and_score_completions

    def gen_and_score_timed(*a, **kw):
        t0 = time.perf_counter()
        out = gen_and_score(*a, **kw)
        current["sample_and_score"] = current.get("sample_and_score", 0.0) + time.perf_counter() - t0
        return out

    trainer._generate_and_score_completions = gen_and_score_timed

    class PhaseMarks(TrainerCallback):
        def on_step_end(self, *_a, **_k):
            phases.append(dict(current))
            current.clear()

    trainer.add_callback(PhaseMarks())
    t_train = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t_train
    steps = []
    for i, ph in enumerate(phases):
        step_s = marks[i + 1] - marks[i] if i + 1 < len(marks) else float("nan")
        sample = ph.get("sample", 0.0)
        score = ph.get("sample_and_score", 0.0) - sample
        steps.append({"step": i + 1, "step_s": round(step_s, 3), "sample_s": round(sample, 3),
                      "score_s": round(score, 3), "update_s": round(step_s - sample - score, 3)})
    if args.save:
        trainer.model.save_pretrained(args.save)
    result = {
        "side": "trl", "steps": len(steps), "per_step": steps, "rewards": rewards, "peak_rss_mb": _peak_rss_mb(),
        "wall_s": round(time.perf_counter() - started, 1), "train_wall_s": round(train_wall, 1),
        "cpu_s": round(time.process_time(), 1), "threads": torch.get_num_threads(),
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing), "saved": args.save,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
