"""Direct preference optimisation: the ``dpo`` job.

Data: a ``preference`` snapshot (the config's ``snapshot_id``, or one frozen from the current judgments when the run
starts; too small a snapshot is rolled back and the project left unchanged); each pair's margin comes from the
judged strength (``margins``, subtracted inside the sigmoid as for the reward model); ties are left out (DPO has no
target for them). A fraction of the snapshot's prompts is split off for the ``eval/`` metrics.

Held-out evaluation: the judgments on the project's **held-out prompts** (split ``heldout``: they never enter a
training snapshot) are frozen into their own snapshot when the run starts (its id in the run folder, file
``heldout_snapshot_id``; at most ``HELDOUT_MAX_PAIRS`` pairs, a seeded sample beyond that) and scored before the
first update (step 0), at every evaluation and at the end: the ``heldout/`` metrics. ``heldout/accuracy`` is the
implicit-reward preference accuracy with ties counted as half a correct pair (a tie is an implicit-reward
difference within ``TIE_TOLERANCE``), so it reads 0.5 at step 0, where the policy is the reference (a fresh LoRA
adapter adds exact zeros; a policy continued from ``adapter_from`` is that reference adapter) and every pair is a
tie; ``heldout/ties`` counts them, ``heldout/accuracy_low``/``_high`` are its 95 % Wilson interval.
:func:`evaluate_preferences` scores any saved adapter the same way (a checkpoint of a cancelled run, say).

Model: one base with the trained adapter ``policy`` (fresh, or continued from ``adapter_from``) and the frozen
reference: the adapter ``reference`` (``reference_adapter``, else ``adapter_from``) on the same base, or the bare
base through ``disable_adapter()`` when there is none. No second copy of the model exists. The reference never
changes, so its log-probabilities of every pair are computed once, before training, in one no-grad pass.

Speed and memory: pairs are encoded as prompt + two continuations (``engine.rm_data``) and packed as the reward
model packs them (:class:`DpoBatch`): one row without padding, each pair's prompt once, the ``wb_pairs`` attention
(``engine.pair_attention``) letting each response see only the prompt and itself. Only the response positions go
through the LM head, in checkpointed chunks (no [B, L, vocab] logits kept). Nothing in this layout needs a KV cache,
so gradient checkpointing (on by default, as for the reward model) works with it. Batches group pairs of similar
length.

Losses (``engine.losses.dpo_loss``): ``sigmoid`` (DPO, summed log-probabilities, optional label smoothing),
``ipo`` (mean per-token log-probabilities), and ``hinge`` (SLiC: ``relu(1 − β·h)``, here). Metrics: loss, implicit
rewards β·(logπ − logπ_ref) of chosen and rejected, their accuracy and margin; the same on the eval split and on
the held-out prompts' pairs.

Checkpoints, exact resume (data order, RNG, optimizer, scheduler), cancel, output folder and model card as SFT.
"""

from __future__ import annotations

import math
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.configs import DpoConfig
from workbench.store import Project

from .. import checkpoints as ckpt
from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from ..losses import DEFAULT_MARGINS, DPOOutput, dpo_loss
from ..pair_attention import pairs_attention
from ..reward_model import HeadedModel
from ..rm_data import ChatEncoder, EncodedPair, length_grouped_order
from ..training import check_finite, release_free_memory, warmup_cosine

POLICY, REFERENCE = "policy", "reference"
SNAPSHOT_FILE = "snapshot_id"
HELDOUT_FILE = "heldout_snapshot_id"
# Held-out pairs scored per evaluation (a seeded sample beyond this): enough for a ±5 % interval, bounded cost.
HELDOUT_MAX_PAIRS = 1000
# An implicit-reward difference this small (β-scaled log-probabilities) is a tie, not a win: at step 0 the policy's
# and the reference's log-probabilities agree exactly, later differences are orders of magnitude larger.
TIE_TOLERANCE = 1e-6
LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def peak_mem_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ---------------------------------------------------------------------------------------------- batches
@dataclass
class DpoBatch:
    """B pairs packed in one row without padding, as the reward model packs them (``engine.rm_data``, layout
    ``packed``: each pair ``[prompt | chosen | rejected]``, the prompt once, the ``wb_pairs`` attention), plus where
    each response token's prediction sits in that row.

    ``input_ids``/``position_ids`` [1, T]; ``segments`` one (prompt start, chosen start, rejected start, end) per
    pair; ``predictor`` [N] the row position whose hidden state predicts each of the N response tokens, ``target``
    [N] that token, ``sequence`` [N] which response it belongs to (2i: pair i's chosen, 2i+1: its rejected);
    ``margin`` [B]."""

    input_ids: Tensor
    position_ids: Tensor
    segments: list[tuple[int, int, int, int]]
    predictor: Tensor
    target: Tensor
    sequence: Tensor
    margin: Tensor
    n_tokens: int  # tokens of both conversations of every pair, no padding

    @property
    def size(self) -> int:
        return int(self.margin.shape[0])

    def to(self, device: torch.device | str) -> "DpoBatch":
        return DpoBatch(**{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()})


def collate_dpo(pairs: Sequence[EncodedPair]) -> DpoBatch:
    from ..rm_data import collate_pairs

    packed = collate_pairs(pairs, layout="packed")
    predictor: list[int] = []
    target: list[int] = []
    sequence: list[int] = []
    for i, (p, (p0, c0, r0, end)) in enumerate(zip(pairs, packed.segments)):
        if c0 == p0:
            raise ValueError("a DPO pair needs a non-empty prompt (its first response token is predicted from it)")
        # Chosen token j is predicted by the position before it (the prompt's last position for j = 0); rejected
        # token 0 likewise by the prompt's last position, which it shares with the chosen, then by its own tokens.
        predictor.extend(range(c0 - 1, r0 - 1))
        predictor.extend([c0 - 1, *range(r0, end - 1)] if end > r0 else [])
        target.extend(p.chosen_ids)
        target.extend(p.rejected_ids)
        sequence.extend([2 * i] * len(p.chosen_ids) + [2 * i + 1] * len(p.rejected_ids))
    return DpoBatch(packed.input_ids, packed.position_ids, packed.segments,
                    torch.tensor(predictor, dtype=torch.long), torch.tensor(target, dtype=torch.long),
                    torch.tensor(sequence, dtype=torch.long), packed.margin, packed.n_tokens)


# ---------------------------------------------------------------------------------------------- log-probabilities
# Response tokens whose [tokens, vocab] float logits are alive at once: the LM head and log-softmax run per chunk,
# and under autograd each chunk is checkpointed (recomputed in the backward), so only the hidden states are kept.
# With SmolLM2's 49k vocabulary, batch 8 pairs of ~500 response tokens each would otherwise keep about 1.6 GB of
# logits per copy, several copies through the log-softmax's backward.
HEAD_TOKENS = 1024


def _token_logprobs(lm_head: torch.nn.Module, hidden: Tensor, ids: Tensor) -> Tensor:
    logits = lm_head(hidden).float()
    return logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def chunked_logprobs(lm_head: torch.nn.Module, hidden: Tensor, ids: Tensor, chunk: int = HEAD_TOKENS) -> Tensor:
    """log p(ids[i] | ·) from the hidden states that predict them (``hidden`` [N, ..., H], ``ids`` [N, ...]),
    ``chunk`` entries of the first dimension at a time."""
    from torch.utils.checkpoint import checkpoint

    parts = []
    for s in range(0, hidden.shape[0], chunk):
        h, t = hidden[s : s + chunk], ids[s : s + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_token_logprobs, lm_head, h, t, use_reentrant=False))
        else:
            parts.append(_token_logprobs(lm_head, h, t))
    return torch.cat(parts)


def pair_logprobs(hm: HeadedModel, name: str | None, batch: DpoBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Summed log-probabilities of the chosen and rejected responses [B] each, and their token counts [B] each,
    under adapter ``name`` (``None``: the bare base).

    With gradient checkpointing the backward recomputes the forward, so it must run inside
    ``pairs_attention(hm.transformer())`` too (the training loop does this)."""
    body = hm.backbone()
    lm_head = hm.transformer().get_output_embeddings()

    def run() -> Tensor:
        with pairs_attention(hm.transformer()):
            out = body(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                       pair_segments=batch.segments)
        return out.last_hidden_state[0]

    hm.activate(name)
    if name is None:
        with hm.peft.disable_adapter():
            hidden = run()
    else:
        hidden = run()
    lp = chunked_logprobs(lm_head, hidden.index_select(0, batch.predictor), batch.target)
    n = 2 * batch.size
    sums = torch.zeros(n, dtype=lp.dtype, device=lp.device).index_add(0, batch.sequence, lp)
    counts = torch.bincount(batch.sequence, minlength=n).to(lp.dtype)
    return sums[0::2], sums[1::2], counts[0::2], counts[1::2]


def preference_loss(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, nc: Tensor, nr: Tensor, *, beta: float,
                    loss_type: str, margin: Tensor | None, label_smoothing: float) -> DPOOutput:
    """The configured loss from summed log-probabilities (IPO on per-token means, as it is defined)."""
    if loss_type == "ipo":
        out = dpo_loss(pc / nc.clamp_min(1), pr / nr.clamp_min(1), rc / nc.clamp_min(1), rr / nr.clamp_min(1),
                       beta=beta, loss_type="ipo")
        # Report the implicit rewards on the summed scale, like the other losses.
        return DPOOutput(out.losses, (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach())
    if loss_type == "hinge":
        z = beta * ((pc - rc) - (pr - rr))
        if margin is not None:
            z = z - margin.to(z.dtype)
        return DPOOutput(F.relu(1.0 - z), (beta * (pc - rc)).detach(), (beta * (pr - rr)).detach())
    return dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="sigmoid", margin=margin, label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------------------------- data
class GroupedOrder:
    """Pair indices epoch after epoch, each epoch a length-grouped shuffle (``length_grouped_order``) seeded by the
    run's seed and the epoch; its state is the number of indices taken, so a resume rebuilds it exactly."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, consumed: int = 0):
        self.lengths, self.batch_size, self.seed, self.consumed = list(lengths), batch_size, seed, consumed
        self._epoch, self._order = -1, []

    def _perm(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self._order = length_grouped_order(self.lengths, self.batch_size, self.seed * 1_000_003 + epoch)
            self._epoch = epoch
        return self._order

    def take(self, k: int) -> list[int]:
        out = []
        n = len(self.lengths)
        for _ in range(k):
            epoch, i = divmod(self.consumed, n)
            out.append(self._perm(epoch)[i])
            self.consumed += 1
        return out

    @property
    def epoch(self) -> float:
        return self.consumed / len(self.lengths)


def freeze_or_read_snapshot(ctx: JobContext, cfg: DpoConfig) -> int:
    from workbench.training_data import preference_pairs, preference_snapshot, snapshot_options

    project = ctx.project()
    assert project is not None

    def usable(sid: int) -> int:
        return sum(1 for p in preference_pairs(project, sid) if not p.tie)

    if cfg.snapshot_id is not None:
        snapshot_options(project, cfg.snapshot_id, "preference")
        n = usable(cfg.snapshot_id)
        if n < cfg.min_examples:
            raise JobError(f"snapshot {cfg.snapshot_id} holds {n} preference pair(s); DPO needs at least {cfg.min_examples}")
        return cfg.snapshot_id
    with project.transaction():
        sid = preference_snapshot(project, note=f"dpo run {ctx.run_id}")
        n = usable(sid)
        if n < cfg.min_examples:
            raise JobError(f"the project has {n} judged preference pair(s); DPO needs at least {cfg.min_examples} "
                           "(judge more comparisons)")
        if ctx.run_id is not None:
            project.update_run(ctx.run_id, snapshot_id=sid)
    return sid


def encode_pairs(project_path: Path, sid: int, tokenizer, cfg: DpoConfig) -> tuple[list[EncodedPair], ChatEncoder]:
    from workbench.training_data import preference_pairs

    margins = getattr(cfg, "margins", None) or DEFAULT_MARGINS
    with Project.open(project_path, migrate=False) as project:
        pairs = [p for p in preference_pairs(project, sid) if not p.tie]
    encoder = ChatEncoder(tokenizer, cfg.max_length)
    from .reward import margin_table

    table = {**DEFAULT_MARGINS, **margin_table(margins)}
    return [encoder.encode(p.prompt, p.chosen, p.rejected, margin=float(table.get(p.strength, table.get(None, 0.0)))
                           if getattr(cfg, "use_margins", True) else 0.0, prompt_id=p.prompt_id) for p in pairs], encoder


def split_by_prompt(pairs: list[EncodedPair], fraction: float, seed: int, min_train: int) -> tuple[list[int], list[int]]:
    prompt_ids = sorted({p.prompt_id for p in pairs})
    n_eval = int(round(len(prompt_ids) * fraction))
    if fraction > 0 and n_eval == 0 and len(prompt_ids) >= 10:
        n_eval = 1
    rng = random.Random(seed)
    rng.shuffle(prompt_ids)
    held: set[int] = set()
    for pid in prompt_ids[:n_eval]:
        if sum(1 for p in pairs if p.prompt_id not in held | {pid}) < min_train:
            break
        held.add(pid)
    train = [i for i, p in enumerate(pairs) if p.prompt_id not in held]
    evals = [i for i, p in enumerate(pairs) if p.prompt_id in held]
    return train, evals


class ReferencePassCancelled(Exception):
    """The run was cancelled during the reference pass (before any training step, so there is no checkpoint)."""


class ReferencePassProgress:
    """Counts the pairs the reference pass has scored, logs how far it is at most every ``every_s`` seconds (on a
    CPU the pass over a few thousand pairs takes many minutes, and without this the run says nothing until its
    first step) and raises :class:`ReferencePassCancelled` when the run is cancelled meanwhile."""

    def __init__(self, ctx: JobContext, total: int, every_s: float = 30.0):
        self.ctx, self.total, self.every_s = ctx, total, every_s
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def __call__(self, pairs_scored: int) -> None:
        self.done += pairs_scored
        if self.ctx.should_stop():
            raise ReferencePassCancelled
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            elapsed = now - self.t0
            left = elapsed * (self.total - self.done) / max(1, self.done)
            self.ctx.log(f"reference pass: {self.done:,} of {self.total:,} pairs scored ({elapsed / 60:.1f} min, "
                         f"about {left / 60:.1f} min left)")


@torch.no_grad()
def reference_logprobs(hm: HeadedModel, reference: str | None, pairs: list[EncodedPair], batch_size: int,
                       device: torch.device, on_batch: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor]:
    """Summed reference log-probabilities of every pair's chosen and rejected continuation, [N] each.
    ``on_batch(n)`` is called after each batch of ``n`` pairs."""
    rc, rr = torch.zeros(len(pairs)), torch.zeros(len(pairs))
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = collate_dpo([pairs[i] for i in idx]).to(device)
        c, r, _, _ = pair_logprobs(hm, reference, batch)
        rc[idx], rr[idx] = c.float().cpu(), r.float().cpu()
        if on_batch is not None:
            on_batch(len(idx))
    return rc, rr


# ---------------------------------------------------------------------------------------------- held-out pairs
@torch.no_grad()
def score_pairs(hm: HeadedModel, name: str | None, pairs: Sequence[EncodedPair], batch_size: int,
                device: torch.device, on_batch: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Summed log-probabilities of chosen and rejected and their token counts, [N] each, under adapter ``name``
    (``None``: the bare base), in consecutive chunks of ``batch_size``: the policy and its reference scored with
    the same chunks run the same computations, so they agree exactly while the policy is the reference.
    ``on_batch(n)`` is called after each chunk of ``n`` pairs."""
    outs: list[list[Tensor]] = [[], [], [], []]
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        batch = collate_dpo(chunk).to(device)
        for acc, t in zip(outs, pair_logprobs(hm, name, batch)):
            acc.append(t.float().cpu())
        if on_batch is not None:
            on_batch(len(chunk))
    if not pairs:
        return tuple(torch.zeros(0) for _ in range(4))  # type: ignore[return-value]
    return tuple(torch.cat(t) for t in outs)  # type: ignore[return-value]


def preference_metrics(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, nc: Tensor, nr: Tensor, margin: Tensor, *,
                       beta: float, loss_type: str, label_smoothing: float = 0.0) -> dict[str, float]:
    """Loss, implicit-reward accuracy (ties count half) with its 95 % Wilson interval, ties, margin and mean rewards
    of pairs whose policy (pc, pr) and reference (rc, rr) log-probabilities are given."""
    from .reward import wilson_interval

    n = int(pc.numel())
    if n == 0:
        return {}
    out = preference_loss(pc, pr, rc, rr, nc, nr, beta=beta, loss_type=loss_type, margin=margin,
                          label_smoothing=label_smoothing)
    diff = (out.chosen_rewards - out.rejected_rewards).double()
    ties = int((diff.abs() <= TIE_TOLERANCE).sum())
    wins = int((diff > TIE_TOLERANCE).sum())
    correct = wins + 0.5 * ties
    low, high = wilson_interval(correct, n)  # type: ignore[arg-type]
    return {"loss": float(out.losses.mean()), "accuracy": correct / n, "accuracy_low": low, "accuracy_high": high,
            "wins": float(wins), "ties": float(ties), "pairs": float(n), "margin": float(diff.mean()),
            "chosen": float(out.chosen_rewards.mean()), "rejected": float(out.rejected_rewards.mean())}


def heldout_snapshot(project: Project, note: str) -> int | None:
    """A snapshot of the held-out prompts' judgments, or None when there are none (then nothing is written)."""
    from workbench.training_data import preference_snapshot, select_preference_items

    if not any(select_preference_items(project, split="heldout").values()):
        return None
    return preference_snapshot(project, split="heldout", note=note)


def heldout_pairs(project_path: Path, sid: int, tokenizer, cfg: DpoConfig,
                  max_pairs: int = HELDOUT_MAX_PAIRS) -> list[EncodedPair]:
    """The held-out snapshot's pairs (ties left out), encoded; a sample seeded by the run's seed beyond
    ``max_pairs``, in snapshot order."""
    pairs, _ = encode_pairs(project_path, sid, tokenizer, cfg)
    if len(pairs) > max_pairs:
        keep = sorted(random.Random(cfg.seed).sample(range(len(pairs)), max_pairs))
        pairs = [pairs[i] for i in keep]
    return pairs


def evaluate_preferences(project_path: Path, adapter: str | Path | None, *, snapshot_id: int | None = None,
                         cfg: DpoConfig | None = None, reference_adapter: str | Path | None = None,
                         max_pairs: int = HELDOUT_MAX_PAIRS) -> dict[str, float]:
    """Held-out implicit-reward accuracy of a saved DPO policy adapter (``None``: the bare base) against its
    reference (``reference_adapter``, else the bare base), on ``snapshot_id`` (else a new snapshot of the held-out
    prompts' judgments); the same numbers the job reports as ``heldout/``. ``cfg`` gives base, beta, loss, lengths,
    batch size and device (a DPO run's config.yaml, say)."""
    from ..devices import resolve_device
    from ..models import load_model

    cfg = cfg or DpoConfig()
    if snapshot_id is None:
        with Project.open(project_path, migrate=False) as project:
            snapshot_id = heldout_snapshot(project, "held-out preference evaluation")
        if snapshot_id is None:
            raise JobError("the project has no judged pairs on held-out prompts to evaluate on")
    device = resolve_device(cfg.device)
    loaded = load_model(cfg.base_model, device=device, dtype=cfg.dtype, quantize=cfg.quantize,
                        trust_remote_code=cfg.trust_remote_code)
    hm = HeadedModel(loaded.model)
    if adapter is not None:
        hm.load_adapter(POLICY, adapter, trainable=False)
    if reference_adapter is not None:
        hm.load_adapter(REFERENCE, reference_adapter, trainable=False)
    hm.eval()
    pairs = heldout_pairs(project_path, snapshot_id, loaded.tokenizer, cfg, max_pairs)
    if not pairs:
        raise JobError(f"snapshot {snapshot_id} holds no preference pairs to evaluate on")
    ref = score_pairs(hm, REFERENCE if reference_adapter is not None else None, pairs, cfg.batch_size, device)
    pol = score_pairs(hm, POLICY if adapter is not None else None, pairs, cfg.batch_size, device)
    margin = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    res = preference_metrics(pol[0], pol[1], ref[0], ref[1], pol[2], pol[3], margin, beta=cfg.beta,
                             loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing)
    return {"snapshot_id": float(snapshot_id), **res}


# ---------------------------------------------------------------------------------------------- the job
def build_model(cfg: DpoConfig, device: torch.device) -> tuple[HeadedModel, Any, str | None]:
    from ..lora import LoraSettings, check_adapter_folder
    from ..models import load_model

    reference_from = cfg.reference_adapter or cfg.adapter_from
    for what, path in (("adapter_from", cfg.adapter_from), ("reference_adapter", cfg.reference_adapter)):
        if path:
            try:
                check_adapter_folder(path)
            except Exception as e:
                raise JobError(f"{what}: {e}") from e
    loaded = load_model(cfg.base_model, device=device, dtype=cfg.dtype, quantize=cfg.quantize,
                        trust_remote_code=cfg.trust_remote_code)
    loaded.model.config.use_cache = False
    hm = HeadedModel(loaded.model)
    lora = LoraSettings.from_run_config(cfg, loaded.model)
    if cfg.adapter_from:
        hm.load_adapter(POLICY, cfg.adapter_from, trainable=True)
    else:
        hm.add_adapter(POLICY, lora.peft_config(), head=False, seed=cfg.seed)
    if reference_from:
        hm.load_adapter(REFERENCE, reference_from, trainable=False)
    if cfg.gradient_checkpointing:
        hm.transformer().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return hm, loaded.tokenizer, (REFERENCE if reference_from else None)


class _Saver:
    def __init__(self, hm: HeadedModel):
        self.hm = hm

    def save_pretrained(self, path: Path) -> None:
        self.hm.save_adapter(POLICY, path)


def run_job(ctx: JobContext) -> JobResult:
    from ..devices import resolve_device

    cfg: DpoConfig = ctx.config  # type: ignore[assignment]
    if cfg.loss_type not in LOSS_TYPES:
        raise JobError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, not {cfg.loss_type!r}")
    if ctx.world_size > 1:
        raise JobError("DPO runs in a single process in this version (set num_processes: 1)")
    torch.manual_seed(cfg.seed)
    if ctx.project_path is None:
        raise JobError("DPO needs a project")
    sid = freeze_or_read_snapshot(ctx, cfg)
    (ctx.run_dir / SNAPSHOT_FILE).write_text(str(sid))

    device = resolve_device(cfg.device)
    hm, tokenizer, reference = build_model(cfg, device)
    pairs, encoder = encode_pairs(ctx.project_path, sid, tokenizer, cfg)
    train_idx, eval_idx = split_by_prompt(pairs, cfg.eval_fraction, cfg.seed, cfg.min_examples)
    if len(train_idx) < cfg.min_examples:
        raise JobError(f"snapshot {sid}: only {len(train_idx)} usable training pair(s); DPO needs at least {cfg.min_examples}")
    held_file = ctx.run_dir / HELDOUT_FILE
    if held_file.is_file():  # a resumed run scores the held-out pairs it started with
        text = held_file.read_text().strip()
        held_sid = int(text) if text else None
    else:
        project = ctx.project()
        assert project is not None
        held_sid = heldout_snapshot(project, f"dpo run {ctx.run_id}: held-out evaluation")
        held_file.write_text("" if held_sid is None else str(held_sid))
    stats = encoder.stats
    if stats.turns_dropped or stats.prompts_cut or stats.responses_cut:
        ctx.log(f"max_length {cfg.max_length}: {stats.turns_dropped} turn(s) dropped, {stats.prompts_cut} prompt(s) "
                f"and {stats.responses_cut} response(s) cut")
    train = [pairs[i] for i in train_idx]
    evals = [pairs[i] for i in eval_idx]

    t_ref = time.perf_counter()
    hm.eval()
    held = heldout_pairs(ctx.project_path, held_sid, tokenizer, cfg) if held_sid is not None else []
    held_margin = torch.tensor([p.margin for p in held], dtype=torch.float32)
    progress = ReferencePassProgress(ctx, len(train) + len(evals) + len(held))
    try:
        ref_c, ref_r = reference_logprobs(hm, reference, train, cfg.batch_size, device, progress)
        eval_ref = reference_logprobs(hm, reference, evals, cfg.batch_size, device, progress) if evals else None
        held_ref = score_pairs(hm, reference, held, cfg.batch_size, device, progress) if held else None
    except ReferencePassCancelled:
        ctx.log(f"cancelled during the reference pass ({progress.done:,} of {progress.total:,} pairs scored), "
                "before the first training step: there is no checkpoint to resume")
        return JobResult("cancelled", None, {}, _summary(0, 0.0, 0, 0, time.perf_counter() - t_ref))
    ref_seconds = time.perf_counter() - t_ref
    # The policy starts as the reference: a fresh adapter (LoRA B = 0) on the base the reference is, or the
    # reference adapter itself. Then its log-probabilities equal the reference's exactly and need no second pass.
    starts_as_reference = (reference is None and not cfg.adapter_from) or (
        bool(cfg.adapter_from) and cfg.reference_adapter in (None, "", cfg.adapter_from))

    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = max(1, math.ceil(len(train) / per_step))
    total_steps = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))
    params = hm.trainable_parameters(POLICY)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = warmup_cosine(optimizer, total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    order = GroupedOrder([p.length for p in train], cfg.batch_size, cfg.seed)
    step, tokens_seen, train_time, best = 0, 0, 0.0, float("inf")
    if ctx.resume:
        last = ckpt.latest_checkpoint(ctx.checkpoint_dir)
        if last is None:
            raise JobError(f"nothing to resume: no checkpoint in {ctx.checkpoint_dir}")
        state, _ = ckpt.load_checkpoint(last, model=hm.peft, optimizer=optimizer, scheduler=scheduler,
                                        adapter_name=POLICY)
        if state["n_train"] != len(train):
            raise JobError("the checkpoint was made on another set of pairs; resume needs the same snapshot and settings")
        step, tokens_seen, train_time = int(state["step"]), int(state["tokens"]), float(state["train_time"])
        best = float(state.get("best", best))
        order.consumed = int(state["consumed"])
        ctx.log(f"resumed from {last.name} at step {step}")

    ctx.log(f"DPO ({cfg.loss_type}, beta {cfg.beta}) on {len(train)} pairs ({len(evals)} held out), {total_steps} "
            f"steps of {per_step} pairs, {sum(p.numel() for p in params):,} trainable parameters, reference = "
            f"{'adapter ' + str(cfg.reference_adapter or cfg.adapter_from) if reference else 'the bare base'}")
    last_metrics: dict[str, float] = {}
    eval_every = cfg.eval_every or cfg.checkpoint_every

    def evaluate() -> dict[str, float]:
        assert eval_ref is not None
        hm.eval()
        sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0, "chosen": 0.0, "rejected": 0.0}
        with torch.no_grad():
            for s in range(0, len(evals), cfg.batch_size):
                chunk = evals[s : s + cfg.batch_size]
                batch = collate_dpo(chunk).to(device)
                pc, pr, nc, nr = pair_logprobs(hm, POLICY, batch)
                rc, rr = eval_ref[0][s : s + len(chunk)].to(device), eval_ref[1][s : s + len(chunk)].to(device)
                out = preference_loss(pc, pr, rc, rr, nc, nr, beta=cfg.beta, loss_type=cfg.loss_type,
                                      margin=batch.margin, label_smoothing=cfg.label_smoothing)
                sums["loss"] += float(out.losses.sum())
                sums["accuracy"] += float((out.chosen_rewards > out.rejected_rewards).float().sum())
                sums["margin"] += float((out.chosen_rewards - out.rejected_rewards).sum())
                sums["chosen"] += float(out.chosen_rewards.sum())
                sums["rejected"] += float(out.rejected_rewards.sum())
        return {f"eval/{k}": v / len(evals) for k, v in sums.items()}

    def evaluate_heldout(at_start: bool = False) -> dict[str, float]:
        assert held_ref is not None
        hm.eval()
        pol = held_ref if at_start and starts_as_reference else score_pairs(hm, POLICY, held, cfg.batch_size,
                                                                              device)
        res = preference_metrics(pol[0], pol[1], held_ref[0], held_ref[1], pol[2], pol[3], held_margin,
                                 beta=cfg.beta, loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing)
        return {f"heldout/{k}": v for k, v in res.items()}

    if held and step == 0:
        start = evaluate_heldout(at_start=True)
        ctx.metrics(0, start)
        ctx.log(f"held-out implicit-reward accuracy before training: {start['heldout/accuracy']:.3f} on "
                f"{len(held)} pairs of snapshot {held_sid} ({int(start['heldout/ties'])} ties, counted as half)")

    def save(step: int, metric: float) -> None:
        nonlocal best
        is_best = metric < best
        if is_best:
            best = metric
        state = {"tokens": tokens_seen, "train_time": train_time, "best": best, "consumed": order.consumed,
                 "n_train": len(train), "total_steps": total_steps, "snapshot_id": sid}
        path = ckpt.save_checkpoint(ctx.checkpoint_dir, step, model=_Saver(hm), optimizer=optimizer,
                                    scheduler=scheduler, state=state)
        if is_best:
            ckpt.mark_best(ctx.checkpoint_dir, path, metric, "eval/loss" if evals else "train/loss")
        ckpt.prune(ctx.checkpoint_dir, cfg.keep_checkpoints)
        ctx.checkpoint(step, path, {k: v for k, v in last_metrics.items() if k.startswith("eval/")} or None, is_best)

    # Training mode: transformers checkpoints layers only there. Dropout is the model's own (none in SmolLM2) and the
    # LoRA dropout, which is 0 unless asked; evaluations switch to eval mode and back.
    hm.train()
    while step < total_steps:
        t0 = time.perf_counter()
        indices = order.take(per_step)
        sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0, "chosen": 0.0, "rejected": 0.0}
        step_tokens = 0
        for m in range(cfg.grad_accum):
            idx = indices[m * cfg.batch_size : (m + 1) * cfg.batch_size]
            if not idx:
                continue
            batch = collate_dpo([train[i] for i in idx]).to(device)
            # the backward recomputes checkpointed layers, which need the pair attention again
            with pairs_attention(hm.transformer()):
                pc, pr, nc, nr = pair_logprobs(hm, POLICY, batch)
                out = preference_loss(pc, pr, ref_c[idx].to(device), ref_r[idx].to(device), nc, nr, beta=cfg.beta,
                                      loss_type=cfg.loss_type, margin=batch.margin,
                                      label_smoothing=cfg.label_smoothing)
                (out.losses.sum() / len(indices)).backward()
            sums["loss"] += float(out.losses.detach().sum())
            sums["accuracy"] += float((out.chosen_rewards > out.rejected_rewards).float().sum())
            sums["margin"] += float((out.chosen_rewards - out.rejected_rewards).sum())
            sums["chosen"] += float(out.chosen_rewards.sum())
            sums["rejected"] += float(out.rejected_rewards.sum())
            step_tokens += batch.n_tokens
        check_finite(sums["loss"], step + 1)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        release_free_memory(step)
        tokens_seen += step_tokens
        train_time += time.perf_counter() - t0
        n = len(indices)
        metrics = {"train/loss": sums["loss"] / n, "rewards/chosen": sums["chosen"] / n,
                   "rewards/rejected": sums["rejected"] / n, "rewards/accuracy": sums["accuracy"] / n,
                   "rewards/margin": sums["margin"] / n, "train/lr": lr, "train/epoch": order.epoch,
                   "train/tokens_per_s": tokens_seen / train_time, "train/tokens": float(tokens_seen),
                   "perf/peak_mem_mb": peak_mem_mb()}
        if grad_norm is not None:
            metrics["train/grad_norm"] = float(grad_norm)
        last_metrics.update(metrics)
        if step % cfg.log_every == 0 or step == total_steps:
            ctx.metrics(step, metrics)
        ctx.progress(step, total_steps, epoch=round(order.epoch, 4), tokens=tokens_seen,
                     tokens_per_s=round(tokens_seen / train_time, 1),
                     eta_s=round((total_steps - step) * train_time / step, 1))
        stop = ctx.should_stop()
        at_checkpoint = cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps
        if eval_every and step % eval_every == 0 and step < total_steps and (evals or held):
            if evals:
                last_metrics.update(evaluate())
            if held:
                last_metrics.update(evaluate_heldout())
            ctx.metrics(step, {k: v for k, v in last_metrics.items() if k.startswith(("eval/", "heldout/"))})
            hm.train()
        if at_checkpoint or stop:
            save(step, last_metrics.get("eval/loss", metrics["train/loss"]))
        if stop:
            ctx.log(f"cancelled at step {step}; checkpoint saved")
            return JobResult("cancelled", None, dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps, ref_seconds))

    if evals or held:
        if evals:
            last_metrics.update(evaluate())
        if held:
            last_metrics.update(evaluate_heldout())
        ctx.metrics(step, {k: v for k, v in last_metrics.items() if k.startswith(("eval/", "heldout/"))})
    output = ctx.output_dir
    write_output(output, hm, tokenizer, cfg, ctx, sid, last_metrics)
    return JobResult("done", str(output), dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps, ref_seconds))


def _summary(tokens: int, seconds: float, step: int, total: int, ref_seconds: float) -> dict[str, Any]:
    return {"tokens": tokens, "train_s": round(seconds, 2), "reference_s": round(ref_seconds, 2), "steps": step,
            "total_steps": total, "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0,
            "peak_mem_mb": round(peak_mem_mb(), 1)}


def write_output(output: Path, hm: HeadedModel, tokenizer, cfg: DpoConfig, ctx: JobContext, snapshot_id: int,
                 metrics: dict[str, float]) -> None:
    from .ppo.job import model_card

    output.mkdir(parents=True, exist_ok=True)
    hm.save_adapter(POLICY, output)
    tokenizer.save_pretrained(output)
    cfg.save(output / "config.yaml")
    snap: dict[str, Any] = {}
    project = ctx.project()
    if project is not None:
        snap = next((s for s in project.snapshots() if s["id"] == snapshot_id), {})
    ref = cfg.reference_adapter or cfg.adapter_from
    notes = [f"Trained with the {cfg.loss_type} preference loss (beta {cfg.beta}) against a frozen reference: "
             f"{'the adapter `' + str(ref) + '`' if ref else 'the bare base model'}."]
    (output / "README.md").write_text(model_card("DPO", cfg, snapshot_id, snap, metrics, ctx.run_id, notes),
                                      encoding="utf-8")
