"""The safety classifier: base + LoRA + one logit per flag category, trained on the project's safety flags.

Data: a ``safety`` snapshot (``workbench.training_data.safety_snapshot`` / ``safety_examples``): one example per
flagged text — a response in the context of its prompt, or a prompt on its own for prompt-level flags — with the
categories present, the categories checked and known absent, and every other category **unknown**. The loss is
binary cross-entropy over the known cells only (:func:`engine.losses.masked_bce_with_logits`): an unflagged
category is not evidence of absence unless someone said so (XSTest's safe prompts and the moderation set's 0
labels do say so).

Categories: the config's list, else every category with at least one known label in the snapshot, in the
project's taxonomy order. They are stored in the head's metadata, so a loaded classifier knows its outputs.

Metrics: ``train/loss``; ``eval/loss``, ``eval/accuracy`` (over every known held-out cell),
``eval/accuracy/<category>`` and ``eval/known/<category>`` (held-out cells with a label), ``eval/macro_accuracy``.
The ``safety`` job's training loop follows the reward model's (checkpoints, resume, cancel, several processes).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.configs import SafetyConfig
from workbench.store import Project

from .. import checkpoints as ckpt
from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from ..losses import masked_bce_with_logits
from ..pair_attention import pairs_attention
from ..reward_model import HeadedModel, packed_scores
from ..rm_data import ChatEncoder
from ..training import DataOrder, check_finite, make_accelerator, warmup_cosine

SNAPSHOT_FILE = "snapshot_id"


@dataclass
class LabelledText:
    """Token ids of one text and its label row: ``labels``/``known`` have one entry per category (0/1)."""

    ids: list[int]
    labels: list[float]
    known: list[float]
    prompt_id: int


def choose_categories(examples: Sequence[Any], wanted: Sequence[str], taxonomy_order: Sequence[str]) -> list[str]:
    """``wanted`` when given (each must be in the taxonomy), else the categories with a known label, in taxonomy order."""
    if wanted:
        unknown = [c for c in wanted if c not in taxonomy_order]
        if unknown:
            raise JobError(f"unknown flag categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; the "
                           f"project's taxonomy has {', '.join(taxonomy_order)}")
        return list(wanted)
    seen = {c for ex in examples for c in (*ex.categories, *ex.absent)}
    return [c for c in taxonomy_order if c in seen]


def label_rows(examples: Sequence[Any], categories: Sequence[str]) -> tuple[list[list[float]], list[list[float]]]:
    """(labels, known) matrices: 1/1 present, 0/1 known absent, 0/0 unknown."""
    labels, known = [], []
    for ex in examples:
        present, absent = set(ex.categories), set(ex.absent)
        labels.append([1.0 if c in present else 0.0 for c in categories])
        known.append([1.0 if (c in present or c in absent) else 0.0 for c in categories])
    return labels, known


def encode_examples(examples: Sequence[Any], categories: Sequence[str], encoder: ChatEncoder) -> list[LabelledText]:
    """Token ids per example: a response after its prompt, or a prompt-level flag's prompt on its own."""
    labels, known = label_rows(examples, categories)
    out = []
    for ex, lab, kn in zip(examples, labels, known):
        if not any(kn):
            continue
        if ex.response_id is not None:
            p, r, _ = encoder.encode_single(ex.prompt, ex.text)
            ids = p + r
        else:
            msgs = ex.prompt or [{"role": "user", "content": ex.text}]
            ids = encoder.prompt_ids(msgs)
            ids = ids[max(0, len(ids) - encoder.max_length):]
        out.append(LabelledText(ids, lab, kn, ex.prompt_id))
    return out


class SafetyLogits(nn.Module):
    """Logits [N, C] of a list of texts; a module so ``accelerator.prepare`` (DDP) wraps the computation."""

    def __init__(self, model: HeadedModel, name: str = "default"):
        super().__init__()
        self.model = model
        self.name = name

    def forward(self, sequences: list[list[int]]) -> torch.Tensor:
        return packed_scores(self.model, self.name, sequences).float()


def _targets(items: Sequence[LabelledText], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([x.labels for x in items], device=device), torch.tensor([x.known for x in items], device=device))


@torch.no_grad()
def evaluate(scorer: nn.Module, items: Sequence[LabelledText], categories: Sequence[str], batch_size: int,
             device: torch.device, threshold: float = 0.5, accelerator: Any = None) -> dict[str, float]:
    """Held-out loss and accuracy at ``threshold``, overall and per category, over known cells only."""
    was_training = scorer.training
    scorer.eval()
    world = getattr(accelerator, "num_processes", 1) if accelerator is not None else 1
    rank = getattr(accelerator, "process_index", 0) if accelerator is not None else 0
    c = len(categories)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    correct = torch.zeros(c, dtype=torch.float64)
    counted = torch.zeros(c, dtype=torch.float64)
    logit_t = float(torch.logit(torch.tensor(threshold).clamp(1e-6, 1 - 1e-6)))
    for i in range(rank * batch_size, len(items), batch_size * world):
        chunk = items[i:i + batch_size]
        logits = scorer([x.ids for x in chunk])
        labels, known = _targets(chunk, logits.device)
        per = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none") * known
        loss_sum += float(per.sum())
        pred = (logits > logit_t).float()
        correct += ((pred == labels).float() * known).sum(0).double().cpu()
        counted += known.sum(0).double().cpu()
    totals = torch.cat([loss_sum, correct, counted])
    if world > 1:
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="sum").cpu()
    if was_training:
        scorer.train()
    loss_sum, correct, counted = totals[:1], totals[1:1 + c], totals[1 + c:]
    n = float(counted.sum())
    if n == 0:
        return {}
    out = {"loss": float(loss_sum) / n, "accuracy": float(correct.sum()) / n}
    accs = []
    for k, cat in enumerate(categories):
        out[f"known/{cat}"] = float(counted[k])
        if counted[k] > 0:
            out[f"accuracy/{cat}"] = float(correct[k] / counted[k])
            accs.append(out[f"accuracy/{cat}"])
    out["macro_accuracy"] = sum(accs) / len(accs)
    return out


def freeze_or_read_snapshot(ctx: JobContext, cfg: SafetyConfig) -> int:
    from workbench.training_data import safety_examples, safety_snapshot, snapshot_options

    project = ctx.project()
    assert project is not None
    if cfg.snapshot_id is not None:
        snapshot_options(project, cfg.snapshot_id, "safety")
        n = len(safety_examples(project, cfg.snapshot_id))
        if n < cfg.min_examples:
            raise JobError(f"snapshot {cfg.snapshot_id} holds {n} labelled text(s); a safety classifier needs at "
                           f"least {cfg.min_examples} (flag more responses)")
        return cfg.snapshot_id
    with project.transaction():
        sid = safety_snapshot(project, note=f"run {ctx.run_id}")
        n = len(safety_examples(project, sid))
        if n < cfg.min_examples:
            raise JobError(f"the project has {n} text(s) with safety labels on training prompts; a safety classifier "
                           f"needs at least {cfg.min_examples} (flag more responses, or import XSTest / moderation data)")
        if ctx.run_id is not None:
            project.update_run(ctx.run_id, snapshot_id=sid)
    return sid


def run_safety(ctx: JobContext) -> JobResult:
    """The ``safety`` job: train the classifier (see the module docstring)."""
    from workbench.training_data import safety_examples

    from .reward import ADAPTER, _summary, build_reward_model, head_tensors, restore_head, split_by_prompt, write_output

    cfg: SafetyConfig = ctx.config  # type: ignore[assignment]
    torch.manual_seed(cfg.seed)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    if ctx.is_main:
        sid = freeze_or_read_snapshot(ctx, cfg) if ctx.project_path is not None else cfg.snapshot_id
        if sid is None:
            raise JobError("no project and no snapshot to train on")
        (ctx.run_dir / SNAPSHOT_FILE).write_text(str(sid))
    accelerator.wait_for_everyone()
    sid = int((ctx.run_dir / SNAPSHOT_FILE).read_text())
    with Project.open(ctx.project_path, migrate=False) as project:
        examples = safety_examples(project, sid)
        order_of = [k for k, *_ in project.categories()]
    categories = choose_categories(examples, cfg.categories, order_of)
    if not categories:
        raise JobError(f"snapshot {sid} has no category with a known label")

    hm, tokenizer = build_reward_model(cfg, device, out_features=len(categories), kind="safety", labels=categories)
    items = encode_examples(examples, categories, ChatEncoder(tokenizer, cfg.max_length))
    held = split_by_prompt([x.prompt_id for x in items], cfg.eval_fraction, cfg.seed, cfg.min_examples)
    train = [x for x in items if x.prompt_id not in held]
    evals = [x for x in items if x.prompt_id in held]
    if len(train) < cfg.min_examples:
        raise JobError(f"snapshot {sid}: only {len(train)} labelled training text(s); a safety classifier needs at "
                       f"least {cfg.min_examples}")

    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.batch_size * cfg.grad_accum * world
    total_steps = cfg.max_steps or max(1, int(round(cfg.epochs * max(1, -(-len(train) // per_step)))))
    params = [p for p in hm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    scorer, optimizer = accelerator.prepare(SafetyLogits(hm), optimizer)

    order = DataOrder(len(train), cfg.seed)
    step, tokens_seen, train_time, best = 0, 0, 0.0, float("inf")
    if ctx.resume:
        at = ckpt.resume_progress(ctx.checkpoint_dir, model=hm.peft, optimizer=optimizer, scheduler=scheduler,
                                  adapter_name=ADAPTER)
        restore_head(hm, at.extra)
        step, tokens_seen, train_time, best = at.step, at.tokens, at.train_time, at.best
        order = DataOrder.from_state(at.data_order_state, len(train))
        ctx.log(f"resumed from {at.path.name} at step {step}")
    ctx.log(f"safety classifier over {', '.join(categories)}: {len(train)} texts ({len(evals)} held out), "
            f"{total_steps} steps")
    last_metrics: dict[str, float] = {}
    eval_every = cfg.eval_every or cfg.checkpoint_every

    def run_eval() -> None:
        if evals:
            res = evaluate(scorer, evals, categories, cfg.batch_size, device, cfg.threshold, accelerator)
            values = {f"eval/{k}": v for k, v in res.items()}
            last_metrics.update(values)
            ctx.metrics(step, values)

    def save(metric: float) -> None:
        nonlocal best
        is_best = metric < best
        best = min(best, metric)
        if ctx.is_main:
            state = {"tokens": tokens_seen, "train_time": train_time, "best": best, "data_order": order.state(),
                     "total_steps": total_steps, "snapshot_id": sid, "categories": categories}
            path = ckpt.save_checkpoint(ctx.checkpoint_dir, step, model=hm.peft, optimizer=optimizer,
                                        scheduler=scheduler, state=state, extra_tensors=head_tensors(hm))
            if is_best:
                ckpt.mark_best(ctx.checkpoint_dir, path, metric, "eval/loss" if evals else "train/loss")
            ckpt.prune(ctx.checkpoint_dir, cfg.keep_checkpoints)
            ctx.checkpoint(step, path, {k: v for k, v in last_metrics.items() if k.startswith("eval/")} or None, is_best)
        accelerator.wait_for_everyone()

    scorer.train()
    while step < total_steps:
        t0 = time.perf_counter()
        indices = order.take(per_step)
        step_known = sum(sum(train[i].known) for i in indices)
        sums = torch.zeros(3, dtype=torch.float64)  # loss·known, known, tokens
        for m in range(cfg.grad_accum):
            lo = (m * world + rank) * cfg.batch_size
            micro = [train[i] for i in indices[lo:lo + cfg.batch_size]]
            if not micro:
                continue
            sync = contextlib.nullcontext() if m == cfg.grad_accum - 1 else accelerator.no_sync(scorer)
            # the attention switch spans the backward pass too: gradient checkpointing recomputes the forward there
            with sync, pairs_attention(hm.transformer()):
                logits = scorer([x.ids for x in micro])
                labels, known = _targets(micro, logits.device)
                n_known = float(known.sum())
                loss = masked_bce_with_logits(logits, labels, known)
                # weight by this micro-batch's share of the step's known cells: the step's loss is their mean
                accelerator.backward(loss * (n_known * world / max(1.0, step_known)))
            sums += torch.tensor([float(loss.detach()) * n_known, n_known, sum(len(x.ids) for x in micro)], dtype=torch.float64)
        check_finite(float(sums[0]), step + 1)
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if world > 1:
            sums = accelerator.reduce(sums.to(device), reduction="sum").cpu()
        loss_v = float(sums[0]) / max(1.0, float(sums[1]))
        check_finite(loss_v, step)
        tokens_seen += int(sums[2])
        train_time += time.perf_counter() - t0
        tps = tokens_seen / train_time if train_time > 0 else 0.0
        if step % cfg.log_every == 0 or step == total_steps:
            last_metrics.update({"train/loss": loss_v, "train/lr": lr, "train/epoch": order.epoch,
                                 "train/tokens_per_s": tps})
            ctx.metrics(step, {k: v for k, v in last_metrics.items() if k.startswith("train/")})
        ctx.progress(step, total_steps, epoch=round(order.epoch, 4), tokens=tokens_seen, tokens_per_s=round(tps, 1))
        stop = ctx.should_stop(accelerator)
        at_checkpoint = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0 and step < total_steps
        if (eval_every and step % eval_every == 0 and step < total_steps) or at_checkpoint:
            run_eval()
            scorer.train()
        if at_checkpoint or stop:
            save(last_metrics.get("eval/loss", loss_v) if evals else loss_v)
        if stop:
            ctx.log(f"cancelled at step {step}; checkpoint saved")
            return JobResult("cancelled", None, dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps))

    run_eval()
    output = ctx.output_dir
    if ctx.is_main:
        write_output(output, hm, tokenizer, cfg, ctx, sid, last_metrics, len(train), len(evals), kind="safety classifier")
    accelerator.wait_for_everyone()
    return JobResult("done", str(output), dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps))


def load_classifier(hm: HeadedModel, name: str, path: str | Path) -> list[str]:
    """Load a trained safety classifier under adapter ``name``; returns its categories (the head's outputs)."""
    hm.load_adapter(name, path)
    return list(hm.head_labels.get(name, []))
