"""The ``rm`` (reward model), ``safety`` (safety classifier) and ``eval`` (reward-model accuracy) job bodies.

Reward model. Data: a ``preference`` snapshot (``workbench.training_data``): the config's ``snapshot_id``, or one
frozen from the current judgments when the run starts (ties included when ``ties_as_half``; retests only when
``include_retests``; retracted judgments never), inside the same transaction as the size check, so a snapshot too
small to train on leaves the project untouched. k-wise rankings arrive already expanded into pairs. Margins come
from the judged strength (``RewardConfig.margins``; the key ``none`` is the margin of a judgment without one).
Each pair is encoded once (:mod:`engine.rm_data`, oldest turns dropped first) and batched in the packed layout
(prompt once per pair). Held-out pairs for the eval metrics are split by prompt.

Model: base + LoRA adapter ``default`` + scalar head (:class:`engine.reward_model.HeadedModel`). Loss: Bradley–Terry
with margin, ties as 0.5 targets, plus ``center_rewards · mean((r_c + r_r)²)`` when set. AdamW, warm-up + cosine,
gradient clipping, gradient accumulation, several processes under ``accelerate launch``; checkpoints (adapter,
head, optimizer, scheduler, RNG, data order) every ``checkpoint_every`` steps, exact resume, cooperative cancel.

Metrics (``/``-separated keys): ``train/loss``, ``train/accuracy``, ``train/reward_mean``, ``train/reward_std``,
``train/margin`` (mean r_c − r_r), ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``; ``eval/loss``,
``eval/accuracy``, ``eval/accuracy_low``/``eval/accuracy_high`` (95 % Wilson interval), ``eval/reward_mean``,
``eval/reward_std``, ``eval/margin``.

Output in the run folder: ``adapter/`` (what ``PeftModel.from_pretrained`` loads, plus ``head.safetensors``), the
tokenizer, ``config.yaml`` and a model card ``README.md``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.configs import EvalConfig, RewardConfig
from workbench.store import Project

from .. import checkpoints as ckpt
from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from ..losses import bradley_terry_loss
from ..pair_attention import pairs_attention
from ..reward_model import HEAD_FILE, HeadedModel, pair_rewards
from ..rm_data import ChatEncoder, EncodedPair, collate_pairs, pad_token_id
from ..training import DataOrder, check_finite, make_accelerator, release_free_memory, warmup_cosine

SNAPSHOT_FILE = "snapshot_id"
ADAPTER = "default"


# ---------------------------------------------------------------------------------------------- small pieces
def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sound near 0 and 1 and for small n, unlike the normal one)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if correct <= 0 else max(0.0, centre - half)
    high = 1.0 if correct >= n else min(1.0, centre + half)
    return (low, high)


def margin_table(cfg_margins: dict[str, float]) -> dict[str | None, float]:
    """The config's strength → margin map with the ``none`` key turned into ``None`` (a judgment without strength)."""
    out: dict[str | None, float] = {}
    for k, v in cfg_margins.items():
        out[None if k in ("none", "") else k] = float(v)
    out.setdefault(None, 0.0)
    return out


def split_by_prompt(prompt_ids: Sequence[int], fraction: float, seed: int, min_train: int) -> set[int]:
    from .sft import split_by_prompt as split

    return split(list(prompt_ids), fraction, seed, min_train)


class PairRewards(nn.Module):
    """(r_chosen, r_rejected) of a batch; a module so ``accelerator.prepare`` (DDP) wraps the whole computation."""

    def __init__(self, model: HeadedModel, name: str = ADAPTER):
        super().__init__()
        self.model = model
        self.name = name

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return pair_rewards(self.model, self.name, batch)


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


# ---------------------------------------------------------------------------------------------- data
def freeze_or_read_snapshot(ctx: JobContext, cfg: RewardConfig) -> int:
    """The preference snapshot to train on (main process); a new one is committed only if it holds enough pairs."""
    from workbench.training_data import preference_pairs, preference_snapshot, snapshot_options

    project = ctx.project()
    assert project is not None
    margins = margin_table(cfg.margins)
    if cfg.snapshot_id is not None:
        snapshot_options(project, cfg.snapshot_id, "preference")
        n = len(preference_pairs(project, cfg.snapshot_id, margins=margins))
        if n < cfg.min_examples:
            raise JobError(f"snapshot {cfg.snapshot_id} holds {n} preference pair(s); a reward model needs at least "
                           f"{cfg.min_examples} (judge more comparisons)")
        return cfg.snapshot_id
    with project.transaction():
        sid = preference_snapshot(project, include_ties=cfg.ties_as_half, include_retests=cfg.include_retests,
                                  note=f"run {ctx.run_id}")
        n = len(preference_pairs(project, sid, margins=margins))
        if n < cfg.min_examples:
            raise JobError(f"the project has {n} judged preference pair(s) on training prompts; a reward model needs "
                           f"at least {cfg.min_examples} (judge more comparisons)")
        if ctx.run_id is not None:
            project.update_run(ctx.run_id, snapshot_id=sid)
    return sid


def encode_pairs(project_path: Path | None, snapshot_id: int, tokenizer: Any, cfg: RewardConfig,
                 project: Project | None = None) -> tuple[list[EncodedPair], ChatEncoder]:
    from workbench.training_data import preference_pairs

    margins = margin_table(cfg.margins)
    if project is None:
        with Project.open(project_path, migrate=False) as p:
            raw = preference_pairs(p, snapshot_id, margins=margins)
    else:
        raw = preference_pairs(project, snapshot_id, margins=margins)
    encoder = ChatEncoder(tokenizer, cfg.max_length)
    encoded = [
        encoder.encode(pp.prompt, pp.chosen, pp.rejected, margin=pp.margin, tie=pp.tie and cfg.ties_as_half,
                       prompt_id=pp.prompt_id)
        for pp in raw
        if cfg.ties_as_half or not pp.tie
    ]
    return encoded, encoder


# ---------------------------------------------------------------------------------------------- model
def build_reward_model(cfg: RewardConfig, device: torch.device, *, out_features: int = 1, kind: str = "reward",
                       labels: Sequence[str] = ()) -> tuple[HeadedModel, Any]:
    """Base + a trainable LoRA adapter ``default`` + a head; from ``adapter_from`` when set (its head too, when
    the folder has one: an SFT adapter gets a fresh head)."""
    from ..lora import LoraSettings, attach_lora, load_adapter
    from ..models import load_model

    loaded = load_model(cfg.base_model, device=device, dtype=cfg.dtype, quantize=cfg.quantize,
                        trust_remote_code=cfg.trust_remote_code)
    model = loaded.model
    model.config.use_cache = False
    settings = LoraSettings.from_run_config(cfg, model)
    torch.manual_seed(cfg.seed)
    if cfg.adapter_from:
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model = load_adapter(model, cfg.adapter_from, adapter_name=ADAPTER, trainable=True)
    else:
        model = attach_lora(model, settings, adapter_name=ADAPTER, gradient_checkpointing=cfg.gradient_checkpointing)
    hm = HeadedModel(model)
    hm.adopt_adapter(ADAPTER, trainable=True)
    if cfg.adapter_from and (Path(cfg.adapter_from) / HEAD_FILE).is_file():
        hm.load_head(ADAPTER, cfg.adapter_from)
        if hm.heads[ADAPTER].out_features != out_features:
            raise JobError(f"{cfg.adapter_from}: its head has {hm.heads[ADAPTER].out_features} output(s), this job "
                           f"needs {out_features}")
        hm.head_kind[ADAPTER] = kind
        hm.head_labels[ADAPTER] = list(labels)
    else:
        hm.add_head(ADAPTER, out_features=out_features, kind=kind, labels=labels)
    hm.adopt_adapter(ADAPTER, trainable=True)
    hm.activate(ADAPTER)
    hm.to(device)
    return hm, loaded.tokenizer


def head_tensors(hm: HeadedModel) -> dict[str, torch.Tensor]:
    head = hm.heads[ADAPTER]
    return {"head.weight": head.weight, "head.bias": head.bias}


def restore_head(hm: HeadedModel, extra: dict[str, torch.Tensor]) -> None:
    head = hm.heads[ADAPTER]
    with torch.no_grad():
        head.weight.copy_(extra["head.weight"])
        head.bias.copy_(extra["head.bias"])


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_pairs(scorer: nn.Module, pairs: Sequence[EncodedPair], batch_size: int, device: torch.device,
                   accelerator: Any = None, centring_coef: float = 0.0) -> dict[str, float]:
    """Loss, accuracy (ties not counted) with its Wilson interval, reward mean/spread and mean margin on ``pairs``
    (shared out across processes when an accelerator with several is given)."""
    was_training = scorer.training
    scorer.eval()
    world = getattr(accelerator, "num_processes", 1) if accelerator is not None else 1
    rank = getattr(accelerator, "process_index", 0) if accelerator is not None else 0
    # sums: loss·n, n, correct, counted, Σr, Σr², Σ(r_c − r_r)
    sums = torch.zeros(7, dtype=torch.float64)
    for i in range(rank * batch_size, len(pairs), batch_size * world):
        batch = collate_pairs(pairs[i:i + batch_size]).to(device)
        rc, rr = scorer(batch)
        rc, rr = rc.float(), rr.float()
        out = bradley_terry_loss(rc, rr, batch.margin, batch.tie, centring_coef=centring_coef)
        keep = ~batch.tie
        r = torch.cat([rc, rr]).double()
        sums += torch.tensor([
            float(out.loss) * batch.size, batch.size, float(((rc > rr) & keep).sum()), float(keep.sum()),
            float(r.sum()), float((r * r).sum()), float((rc - rr).sum()),
        ], dtype=torch.float64)
    if world > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    if was_training:
        scorer.train()
    loss_n, n, correct, counted, s1, s2, sm = sums.tolist()
    if n == 0:
        return {}
    mean = s1 / (2 * n)
    low, high = wilson_interval(int(correct), int(counted))
    return {
        "loss": loss_n / n, "accuracy": correct / counted if counted else float("nan"), "accuracy_low": low,
        "accuracy_high": high, "pairs": n, "reward_mean": mean,
        "reward_std": math.sqrt(max(0.0, s2 / (2 * n) - mean * mean)), "margin": sm / n,
    }


# ---------------------------------------------------------------------------------------------- the rm job
def run_rm(ctx: JobContext) -> JobResult:
    cfg: RewardConfig = ctx.config  # type: ignore[assignment]
    torch.manual_seed(cfg.seed)
    accelerator = make_accelerator(cfg)
    device = accelerator.device
    hm, tokenizer = build_reward_model(cfg, device)

    if ctx.is_main:
        sid = freeze_or_read_snapshot(ctx, cfg) if ctx.project_path is not None else cfg.snapshot_id
        if sid is None:
            raise JobError("no project and no snapshot to train on")
        (ctx.run_dir / SNAPSHOT_FILE).write_text(str(sid))
    accelerator.wait_for_everyone()
    sid = int((ctx.run_dir / SNAPSHOT_FILE).read_text())
    encoded, encoder = encode_pairs(ctx.project_path, sid, tokenizer, cfg)
    held = split_by_prompt([p.prompt_id for p in encoded], cfg.eval_fraction, cfg.seed, cfg.min_examples)
    train = [p for p in encoded if p.prompt_id not in held]
    evals = [p for p in encoded if p.prompt_id in held]
    if len(train) < cfg.min_examples:
        raise JobError(f"snapshot {sid}: only {len(train)} usable training pair(s); a reward model needs at least "
                       f"{cfg.min_examples}")
    st = encoder.stats
    if st.turns_dropped or st.prompts_cut or st.responses_cut:
        ctx.log(f"max_length {cfg.max_length}: {st.turns_dropped} oldest turn(s) dropped, {st.prompts_cut} prompt(s) "
                f"cut at the start, {st.responses_cut} pair(s) with a response cut at the end")

    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.batch_size * cfg.grad_accum * world
    steps_per_epoch = max(1, -(-len(train) // per_step))
    total_steps = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))

    params = [p for p in hm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    scorer = PairRewards(hm)
    scorer, optimizer = accelerator.prepare(scorer, optimizer)

    order = DataOrder(len(train), cfg.seed)
    step, tokens_seen, train_time, best = 0, 0, 0.0, float("inf")
    if ctx.resume:
        at = ckpt.resume_progress(ctx.checkpoint_dir, model=hm.peft, optimizer=optimizer, scheduler=scheduler,
                                  adapter_name=ADAPTER)
        restore_head(hm, at.extra)
        step, tokens_seen, train_time, best = at.step, at.tokens, at.train_time, at.best
        order = DataOrder.from_state(at.data_order_state, len(train))
        ctx.log(f"resumed from {at.path.name} at step {step}")

    ctx.log(f"reward model on {len(train)} pairs ({len(evals)} held out), {total_steps} steps of {per_step} pairs, "
            f"{sum(p.numel() for p in params):,} trainable parameters, {world} process(es)")
    last_metrics: dict[str, float] = {}
    eval_every = cfg.eval_every or cfg.checkpoint_every

    def run_eval() -> None:
        if not evals:
            return
        res = evaluate_pairs(scorer, evals, cfg.batch_size, device, accelerator, cfg.center_rewards)
        values = {f"eval/{k}": v for k, v in res.items()}
        last_metrics.update(values)
        ctx.metrics(step, values)

    def save(metric: float | None) -> None:
        nonlocal best
        is_best = metric is not None and metric < best
        if is_best:
            best = metric
        if ctx.is_main:
            state = {"tokens": tokens_seen, "train_time": train_time, "best": best, "data_order": order.state(),
                     "total_steps": total_steps, "snapshot_id": sid}
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
        n_step = len(indices)
        # sums over this process's pairs: loss·n, correct, counted, Σr, Σr², Σ(r_c − r_r), n
        stats = torch.zeros(7, dtype=torch.float64)
        local_tokens = 0
        for m in range(cfg.grad_accum):
            lo = (m * world + rank) * cfg.batch_size
            micro = [train[i] for i in indices[lo:lo + cfg.batch_size]]
            if not micro:
                continue
            batch = collate_pairs(micro, pad_token_id(tokenizer)).to(device)
            sync = contextlib.nullcontext() if m == cfg.grad_accum - 1 else accelerator.no_sync(scorer)
            # the attention switch spans the backward pass too: gradient checkpointing recomputes the forward there
            with sync, pairs_attention(hm.transformer()):
                rc, rr = scorer(batch)
                out = bradley_terry_loss(rc.float(), rr.float(), batch.margin, batch.tie,
                                         centring_coef=cfg.center_rewards)
                # DDP averages over processes; weighting by the micro-batch's share of the step's pairs (times the
                # process count) makes the gradient that of the mean over every pair of the step.
                accelerator.backward(out.loss * (len(micro) * world / n_step))
            with torch.no_grad():
                rcd, rrd = rc.detach().double(), rr.detach().double()
                keep = ~batch.tie
                r = torch.cat([rcd, rrd])
                stats += torch.tensor([
                    float(out.loss.detach()) * len(micro), float(((rcd > rrd) & keep).sum()), float(keep.sum()),
                    float(r.sum()), float((r * r).sum()), float((rcd - rrd).sum()), len(micro),
                ], dtype=torch.float64)
            local_tokens += batch.n_tokens
        check_finite(float(stats[0]), step + 1)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        release_free_memory(step)
        stats = torch.cat([stats, torch.tensor([float(local_tokens)], dtype=torch.float64)])
        if world > 1:
            stats = accelerator.reduce(stats.to(device), reduction="sum").cpu()
        loss_n, correct, counted, s1, s2, sm, n, toks = stats.tolist()
        loss = loss_n / max(1.0, n)
        check_finite(loss, step)
        tokens_seen += int(toks)
        train_time += time.perf_counter() - t0
        tps = tokens_seen / train_time if train_time > 0 else 0.0
        if step % cfg.log_every == 0 or step == total_steps:
            mean = s1 / max(1.0, 2 * n)
            last_metrics.update({
                "train/loss": loss, "train/accuracy": correct / counted if counted else float("nan"),
                "train/reward_mean": mean, "train/reward_std": math.sqrt(max(0.0, s2 / max(1.0, 2 * n) - mean * mean)),
                "train/margin": sm / max(1.0, n), "train/lr": lr, "train/epoch": order.epoch,
                "train/tokens_per_s": tps, "train/tokens": float(tokens_seen),
            })
            if grad_norm is not None:
                last_metrics["train/grad_norm"] = float(grad_norm)
            ctx.metrics(step, {k: v for k, v in last_metrics.items() if k.startswith("train/")})
        remaining = (total_steps - step) * train_time / max(1, step)
        ctx.progress(step, total_steps, epoch=round(order.epoch, 4), tokens=tokens_seen, tokens_per_s=round(tps, 1),
                     eta_s=round(remaining, 1))

        stop = ctx.should_stop(accelerator)
        at_checkpoint = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0 and step < total_steps
        if (eval_every and step % eval_every == 0 and step < total_steps) or at_checkpoint:
            run_eval()
            scorer.train()
        if at_checkpoint or stop:
            save(last_metrics.get("eval/loss", loss) if evals else loss)
        if stop:
            ctx.log(f"cancelled at step {step}; checkpoint saved")
            return JobResult("cancelled", None, dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps))

    run_eval()
    output = ctx.output_dir
    if ctx.is_main:
        write_output(output, hm, tokenizer, cfg, ctx, sid, last_metrics, len(train), len(evals))
    accelerator.wait_for_everyone()
    return JobResult("done", str(output), dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps))


def _summary(tokens: int, seconds: float, step: int, total: int) -> dict[str, Any]:
    return {"tokens": tokens, "train_s": round(seconds, 2), "steps": step, "total_steps": total,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0}


# ---------------------------------------------------------------------------------------------- output
def write_output(output: Path, hm: HeadedModel, tokenizer: Any, cfg: Any, ctx: JobContext, snapshot_id: int,
                 metrics: dict[str, float], n_train: int, n_eval: int, *, kind: str = "reward model") -> None:
    """The adapter folder with its head, the tokenizer, the run's config and a model card."""
    output.mkdir(parents=True, exist_ok=True)
    hm.save_adapter(ADAPTER, output)
    tokenizer.save_pretrained(output)
    cfg.save(output / "config.yaml")
    snap: dict[str, Any] = {}
    project = ctx.project()
    if project is not None:
        snap = next((s for s in project.snapshots() if s["id"] == snapshot_id), {})
    (output / "README.md").write_text(
        model_card(cfg, snapshot_id, snap, metrics, ctx.run_id, n_train, n_eval, kind=kind,
                   labels=hm.head_labels.get(ADAPTER, [])),
        encoding="utf-8",
    )


def model_card(cfg: Any, snapshot_id: int, snapshot: dict[str, Any], metrics: dict[str, float], run_id: int | None,
               n_train: int, n_eval: int, *, kind: str = "reward model", labels: Sequence[str] = ()) -> str:
    tag = "reward-model" if kind == "reward model" else "safety-classifier"
    what = (
        "a LoRA adapter plus a scalar reward head (`head.safetensors`, read at the last token of the conversation), "
        "trained with a Bradley–Terry loss and a margin from the judged strength"
        if kind == "reward model" else
        f"a LoRA adapter plus a multi-label head (`head.safetensors`, one logit per category: {', '.join(labels)}), "
        "trained with binary cross-entropy on the known labels only"
    )
    lines = [
        "---", "library_name: peft", f"base_model: {cfg.base_model}", f"tags: [lora, {tag}, rlhf-workbench]", "---", "",
        f"# {kind[0].upper() + kind[1:]}{f' — run {run_id}' if run_id is not None else ''}{f' ({cfg.name})' if cfg.name else ''}",
        "", f"Trained in RLHF Workbench: {what}.", "",
        "## Base model", "", f"`{cfg.base_model}`", "",
        "## Data", "",
        f"Snapshot {snapshot_id}" + (f", content hash `{snapshot.get('content_hash')}`, counts {snapshot.get('counts')}, "
                                     f"taken {snapshot.get('created_at')}" if snapshot else "")
        + f"; {n_train} training and {n_eval} held-out examples (split by prompt).", "",
        "## Final metrics", "", *[f"- {k}: {v:.6g}" for k, v in sorted(metrics.items())], "",
        "## Config", "", "```yaml", cfg.to_yaml(with_help=False).rstrip(), "```", "",
        "## Use", "", "```python",
        "from engine.reward_model import HeadedModel",
        "scorer = HeadedModel(base_model)",
        "scorer.load_adapter('reward', 'path/to/this/folder')",
        "scores = scorer.score('reward', input_ids, attention_mask)",
        "```", "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- eval rm
def evaluate_reward_model(
    project: Project,
    adapter: str | Path,
    *,
    snapshot_id: int | None = None,
    base_model: str | None = None,
    batch_size: int = 8,
    max_length: int = 512,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "auto",
    margins: dict[str, float] | None = None,
) -> dict[str, float]:
    """Pairwise accuracy (with its 95 % Wilson interval), loss, reward mean/spread and margin of a trained reward
    model on a preference snapshot. Without a snapshot: a new one of the held-out prompts' judgments."""
    from workbench.training_data import preference_snapshot, snapshot_options

    from ..lora import adapter_base
    from ..models import load_model

    folder = Path(adapter)
    if not (folder / HEAD_FILE).is_file():
        raise JobError(f"{folder}: not a reward model (no {HEAD_FILE} beside the adapter)")
    base = base_model or adapter_base(folder)
    if not base:
        raise JobError(f"{folder}: the adapter does not record its base model; give the base")
    if snapshot_id is None:
        snapshot_id = preference_snapshot(project, split="heldout", note="eval rm")
    else:
        snapshot_options(project, snapshot_id, "preference")
    loaded = load_model(base, device=device, dtype=dtype, quantize=quantize)
    hm = HeadedModel(loaded.model)
    hm.load_adapter(ADAPTER, folder)
    hm.activate(ADAPTER)
    cfg = RewardConfig(max_length=max_length, margins=margins or RewardConfig().margins)
    pairs, _ = encode_pairs(None, snapshot_id, loaded.tokenizer, cfg, project=project)
    if not pairs:
        raise JobError(f"snapshot {snapshot_id} holds no preference pairs to evaluate on")
    res = evaluate_pairs(PairRewards(hm), pairs, batch_size, loaded.device)
    return {"snapshot_id": float(snapshot_id), **res}


def run_eval(ctx: JobContext) -> JobResult:
    """The ``eval`` job: a reward model's accuracy on a snapshot (``EvalConfig``)."""
    cfg: EvalConfig = ctx.config  # type: ignore[assignment]
    if not cfg.adapter_from:
        raise JobError("eval rm needs the reward model's adapter folder (adapter_from)")
    project = ctx.project()
    if project is None:
        raise JobError("eval rm needs a project")
    from workbench.paths import BUNDLED_MODEL_REF

    base = None if cfg.base_model == BUNDLED_MODEL_REF else cfg.base_model
    t0 = time.perf_counter()
    res = evaluate_reward_model(project, cfg.adapter_from, snapshot_id=cfg.snapshot_id, base_model=base,
                                batch_size=cfg.batch_size, max_length=cfg.max_length, device=cfg.device,
                                dtype=cfg.dtype, quantize=cfg.quantize)
    metrics = {f"eval/{k}": v for k, v in res.items()}
    ctx.metrics(0, metrics)
    ctx.log(f"accuracy {res['accuracy']:.3f} (95% interval {res['accuracy_low']:.3f}–{res['accuracy_high']:.3f}) "
            f"on {int(res['pairs'])} pairs of snapshot {int(res['snapshot_id'])}")
    return JobResult("done", str(cfg.adapter_from), metrics, {"eval_s": round(time.perf_counter() - t0, 2)})
