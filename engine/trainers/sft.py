"""Supervised fine-tuning with LoRA on the expert's demonstrations: the ``sft`` job.

Data: a ``sft`` snapshot (``workbench.training_data``): the config's ``snapshot_id``, or one frozen from the
current demonstrations when the run starts (inside the same transaction as the size check, so a snapshot too small
to train on leaves the project untouched). Each example is rendered with the tokenizer's chat template and
left-truncated (:mod:`engine.packing`); the loss covers the response tokens only.

Training: each micro-batch is packed into one row without padding and attention runs per example; the loss of an
optimizer step is the mean over all its trained tokens (summed per micro-batch and divided by the step's token
count, so gradient accumulation and several processes give the same gradient as one big batch); AdamW; warm-up
then cosine; gradient clipping; optional gradient checkpointing. Every ``checkpoint_every`` steps: eval loss on the
held-out split (by prompt), a checkpoint (:mod:`engine.checkpoints`), the last N and the best kept. A cancel
request is honoured after the current step, with a checkpoint first. A resumed run reloads the last checkpoint,
data order and RNG states included, and continues exactly.

Output in the run folder: ``adapter/`` (``PeftModel.from_pretrained`` loads it) with a model card ``README.md``
and the run's ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.configs import SftConfig
from workbench.store import Project

from .. import checkpoints as ckpt
from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from ..packing import Encoded, PackedBatch, encode_chat, pack, packed_token_losses, register_packed_attention
from ..training import (
    DataOrder, check_finite, load_for_training, make_accelerator, release_free_memory, trainable_parameters,
    warmup_cosine,
)

SNAPSHOT_FILE = "snapshot_id"


class PackedLMLoss(nn.Module):
    """Summed cross-entropy of a packed batch's trained tokens. A module, so that ``accelerator.prepare`` (DDP)
    wraps the whole loss computation and gradients are synchronised across processes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, cu_seq_lens, target_pos, target_ids, max_len: int) -> torch.Tensor:
        batch = PackedBatch(input_ids, position_ids, cu_seq_lens, max_len, target_pos, target_ids)
        return packed_token_losses(self.model, batch).sum()


def _call(loss_fn: nn.Module, batch: PackedBatch) -> torch.Tensor:
    return loss_fn(batch.input_ids, batch.position_ids, batch.cu_seq_lens, batch.target_pos, batch.target_ids,
                   batch.max_len)


# ---------------------------------------------------------------------------------------------- data
def freeze_or_read_snapshot(ctx: JobContext, cfg: SftConfig) -> int:
    """The snapshot id to train on (main process). A new snapshot is committed only if it holds enough examples."""
    from workbench.training_data import sft_examples, sft_snapshot, snapshot_options

    project = ctx.project()
    assert project is not None
    if cfg.snapshot_id is not None:
        snapshot_options(project, cfg.snapshot_id, "sft")
        n = len(sft_examples(project, cfg.snapshot_id))
        if n < cfg.min_examples:
            raise JobError(f"snapshot {cfg.snapshot_id} holds {n} SFT example(s); training needs at least "
                           f"{cfg.min_examples} (write more demonstrations)")
        return cfg.snapshot_id
    with project.transaction():
        sid = sft_snapshot(project, include_winners=cfg.include_winning_responses, note=f"run {ctx.run_id}")
        n = len(sft_examples(project, sid))
        if n < cfg.min_examples:
            # Raising inside the transaction rolls the new snapshot back: nothing in the project changes.
            raise JobError(f"the project has {n} SFT example(s) (demonstrations"
                           f"{' and winning responses' if cfg.include_winning_responses else ''}); training needs at "
                           f"least {cfg.min_examples}")
        if ctx.run_id is not None:
            project.update_run(ctx.run_id, snapshot_id=sid)
    return sid


def read_examples(project_path: Path, snapshot_id: int) -> list[Any]:
    from workbench.training_data import sft_examples

    with Project.open(project_path, migrate=False) as project:
        return sft_examples(project, snapshot_id)


def split_by_prompt(prompt_ids: list[int], fraction: float, seed: int, min_train: int) -> set[int]:
    """Prompt ids held out for the eval loss: a seeded choice of about ``fraction`` of the prompts, never leaving
    fewer than ``min_train`` training examples."""
    import random

    unique = sorted(set(prompt_ids))
    n_eval = int(round(len(unique) * fraction))
    if fraction > 0 and n_eval == 0 and len(unique) >= 10:
        n_eval = 1
    rng = random.Random(seed)
    rng.shuffle(unique)
    held: set[int] = set()
    counts: dict[int, int] = {}
    for pid in prompt_ids:
        counts[pid] = counts.get(pid, 0) + 1
    remaining = len(prompt_ids)
    for pid in unique[:n_eval]:
        if remaining - counts[pid] < min_train:
            break
        held.add(pid)
        remaining -= counts[pid]
    return held


# ---------------------------------------------------------------------------------------------- the job
def run_job(ctx: JobContext) -> JobResult:
    cfg: SftConfig = ctx.config  # type: ignore[assignment]
    torch.manual_seed(cfg.seed)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    register_packed_attention()
    model, tokenizer = load_for_training(cfg, device, attn_implementation="wb_packed")

    # Data: the main process freezes (or checks) the snapshot; every process then reads the same examples.
    if ctx.is_main:
        sid = freeze_or_read_snapshot(ctx, cfg) if ctx.project_path is not None else cfg.snapshot_id
        (ctx.run_dir / SNAPSHOT_FILE).write_text(str(sid))
    accelerator.wait_for_everyone()
    sid = int((ctx.run_dir / SNAPSHOT_FILE).read_text())
    examples = read_examples(ctx.project_path, sid)

    encoded: list[Encoded] = []
    prompt_of: list[int] = []
    n_truncated = 0
    for ex in examples:
        enc = encode_chat(tokenizer, ex.prompt, ex.completion, cfg.max_length)
        if enc.n_targets <= 0:
            continue
        n_truncated += enc.truncated
        encoded.append(enc)
        prompt_of.append(ex.prompt_id)
    held = split_by_prompt(prompt_of, cfg.eval_fraction, cfg.seed, cfg.min_examples)
    train = [e for e, p in zip(encoded, prompt_of) if p not in held]
    evals = [e for e, p in zip(encoded, prompt_of) if p in held]
    if len(train) < cfg.min_examples:
        raise JobError(f"snapshot {sid}: only {len(train)} usable training example(s) after tokenisation; "
                       f"training needs at least {cfg.min_examples}")
    if n_truncated:
        ctx.log(f"{n_truncated} conversation(s) longer than max_length {cfg.max_length} lost their oldest turns")

    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.batch_size * cfg.grad_accum * world
    steps_per_epoch = max(1, -(-len(train) // per_step))
    total_steps = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))

    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    loss_fn = PackedLMLoss(model)
    loss_fn, optimizer = accelerator.prepare(loss_fn, optimizer)

    order = DataOrder(len(train), cfg.seed)
    step, tokens_seen, train_time, best = 0, 0, 0.0, float("inf")
    if ctx.resume:
        last = ckpt.latest_checkpoint(ctx.checkpoint_dir)
        if last is None:
            raise JobError(f"nothing to resume: no checkpoint in {ctx.checkpoint_dir}")
        state, _ = ckpt.load_checkpoint(last, model=model, optimizer=optimizer, scheduler=scheduler)
        step, tokens_seen = int(state["step"]), int(state["tokens"])
        train_time, best = float(state["train_time"]), float(state.get("best", float("inf")))
        order = DataOrder.from_state(state["data_order"], len(train))
        ctx.log(f"resumed from {last.name} at step {step}")

    ctx.log(f"SFT on {len(train)} examples ({len(evals)} held out), {total_steps} steps of {per_step} examples, "
            f"{sum(p.numel() for p in params):,} trainable parameters, {world} process(es)")
    last_metrics: dict[str, float] = {}
    eval_every = cfg.eval_every or cfg.checkpoint_every

    def save(step: int, metric: float | None) -> None:
        nonlocal best
        is_best = metric is not None and metric < best
        if is_best:
            best = metric
        if ctx.is_main:
            state = {"tokens": tokens_seen, "train_time": train_time, "best": best, "data_order": order.state(),
                     "total_steps": total_steps, "snapshot_id": sid}
            path = ckpt.save_checkpoint(ctx.checkpoint_dir, step, model=model, optimizer=optimizer,
                                        scheduler=scheduler, state=state)
            if is_best:
                ckpt.mark_best(ctx.checkpoint_dir, path, metric, "eval/loss" if evals else "train/loss")
            ckpt.prune(ctx.checkpoint_dir, cfg.keep_checkpoints)
            ctx.checkpoint(step, path, {k: v for k, v in last_metrics.items() if k.startswith("eval/")} or None, is_best)
        accelerator.wait_for_everyone()

    model.train()
    while step < total_steps:
        t0 = time.perf_counter()
        indices = order.take(per_step)
        batch_examples = [train[i] for i in indices]
        step_targets = sum(e.n_targets for e in batch_examples)
        local_sum, local_tokens = 0.0, 0
        for m in range(cfg.grad_accum):
            lo = (m * world + rank) * cfg.batch_size
            micro = batch_examples[lo:lo + cfg.batch_size]
            if not micro:
                continue
            batch = pack(micro).to(device)
            sync = contextlib.nullcontext() if m == cfg.grad_accum - 1 else accelerator.no_sync(loss_fn)
            with sync:
                loss_sum = _call(loss_fn, batch)
                # DDP averages gradients over processes; scaling by world makes the result the global token mean.
                accelerator.backward(loss_sum * (world / step_targets))
            local_sum += float(loss_sum.detach())
            local_tokens += batch.n_tokens
        check_finite(local_sum, step + 1)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        release_free_memory(step)
        totals = torch.tensor([local_sum, float(local_tokens)], dtype=torch.float64, device=device)
        if world > 1:
            totals = accelerator.reduce(totals, reduction="sum")
        loss = float(totals[0]) / step_targets
        check_finite(loss, step)
        tokens_seen += int(totals[1])
        train_time += time.perf_counter() - t0
        tps = tokens_seen / train_time if train_time > 0 else 0.0
        if step % cfg.log_every == 0 or step == total_steps:
            last_metrics.update({"train/loss": loss, "train/lr": lr, "train/epoch": order.epoch,
                                 "train/tokens_per_s": tps, "train/tokens": float(tokens_seen)})
            if grad_norm is not None:
                last_metrics["train/grad_norm"] = float(grad_norm)
            ctx.metrics(step, {k: v for k, v in last_metrics.items() if k.startswith("train/")})
        remaining = (total_steps - step) * train_time / max(1, step)
        ctx.progress(step, total_steps, epoch=round(order.epoch, 4), tokens=tokens_seen,
                     tokens_per_s=round(tps, 1), eta_s=round(remaining, 1))

        stop = ctx.should_stop(accelerator) and step < total_steps
        at_checkpoint = cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps
        if (eval_every and step % eval_every == 0 and step < total_steps and evals) or (at_checkpoint and evals):
            last_metrics["eval/loss"] = evaluate(loss_fn, evals, cfg.batch_size, accelerator)
            ctx.metrics(step, {"eval/loss": last_metrics["eval/loss"]})
            model.train()
        if at_checkpoint or stop:
            save(step, last_metrics.get("eval/loss", loss) if evals else loss)
        if stop:
            ctx.log(f"cancelled at step {step}; checkpoint saved")
            return JobResult("cancelled", None, dict(last_metrics),
                             _summary(tokens_seen, train_time, step, total_steps))

    if evals:
        last_metrics["eval/loss"] = evaluate(loss_fn, evals, cfg.batch_size, accelerator)
        ctx.metrics(step, {"eval/loss": last_metrics["eval/loss"]})
    output = ctx.output_dir
    if ctx.is_main:
        write_output(output, model, tokenizer, cfg, ctx, sid, last_metrics)
    accelerator.wait_for_everyone()
    return JobResult("done", str(output), dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps))


def _summary(tokens: int, seconds: float, step: int, total: int) -> dict[str, Any]:
    return {"tokens": tokens, "train_s": round(seconds, 2), "steps": step, "total_steps": total,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0}


@torch.no_grad()
def evaluate(loss_fn: nn.Module, evals: list[Encoded], batch_size: int, accelerator) -> float:
    """Token-weighted mean loss over the held-out examples (shared out across processes)."""
    loss_fn.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    total, count = 0.0, 0
    for i in range(rank * batch_size, len(evals), batch_size * world):
        batch = pack(evals[i:i + batch_size]).to(accelerator.device)
        total += float(_call(loss_fn, batch))
        count += batch.n_targets
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=accelerator.device)
    if world > 1:
        t = accelerator.reduce(t, reduction="sum")
    value = float(t[0] / t[1]) if t[1] > 0 else float("nan")
    check_finite(value, 0, "eval loss")
    return value


def write_output(output: Path, model, tokenizer, cfg: SftConfig, ctx: JobContext, snapshot_id: int,
                 metrics: dict[str, float]) -> None:
    """The adapter folder, its model card and the run's config."""
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    cfg.save(output / "config.yaml")
    snap = {}
    project = ctx.project()
    if project is not None:
        snap = next((s for s in project.snapshots() if s["id"] == snapshot_id), {})
    (output / "README.md").write_text(model_card(cfg, snapshot_id, snap, metrics, ctx.run_id), encoding="utf-8")


def model_card(cfg: SftConfig, snapshot_id: int, snapshot: dict[str, Any], metrics: dict[str, float],
               run_id: int | None) -> str:
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {cfg.base_model}",
        "tags: [lora, sft, rlhf-workbench]",
        "---",
        "",
        f"# SFT adapter{f' — run {run_id}' if run_id is not None else ''}{f' ({cfg.name})' if cfg.name else ''}",
        "",
        "A LoRA adapter trained by supervised fine-tuning in RLHF Workbench, on the expert's demonstrations.",
        "",
        "## Base model",
        "",
        f"`{cfg.base_model}`",
        "",
        "## Data",
        "",
        f"Snapshot {snapshot_id}" + (f", content hash `{snapshot.get('content_hash')}`, counts {snapshot.get('counts')}, "
                                     f"taken {snapshot.get('created_at')}" if snapshot else ""),
        "",
        "## Final metrics",
        "",
        *[f"- {k}: {v:.6g}" for k, v in sorted(metrics.items())],
        "",
        "## Config",
        "",
        "```yaml",
        cfg.to_yaml(with_help=False).rstrip(),
        "```",
        "",
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        "model = PeftModel.from_pretrained(base_model, 'path/to/this/folder')",
        "```",
        "",
    ]
    return "\n".join(lines)
