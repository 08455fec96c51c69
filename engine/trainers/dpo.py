"""Direct preference optimisation: the ``dpo`` stage.

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
through the LM head, a few hundred at a time, with no [tokens, vocab] logits kept for the backward
(``engine.token_logprobs``). Nothing in this layout needs a KV cache,
so gradient checkpointing (on by default, as for the reward model) works with it. Batches group pairs of similar
length.

Losses (``engine.losses.dpo_loss``): ``sigmoid`` (DPO, summed log-probabilities, optional label smoothing),
``ipo`` (mean per-token log-probabilities), and ``hinge`` (SLiC: ``relu(1 − β·h)``, here). Metrics: loss, implicit
rewards β·(logπ − logπ_ref) of chosen and rejected, their accuracy and margin; the same on the eval split and on
the held-out prompts' pairs.

Snapshot, split, optimizer and schedule, checkpoints and exact resume (the reference log-probabilities are
recomputed, not saved), cancel, output folder and model card are the training skeleton's
(:mod:`engine.trainers.base`). A cancel during the reference pass ends the run before its first step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.configs import DpoConfig
from workbench.evaluation import wilson_interval
from workbench.store import Project

from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from ..logits import head_transform
from ..losses import DEFAULT_MARGINS, DPOOutput, dpo_loss
from ..pair_attention import pairs_attention
from ..reward_model import HeadedModel
from ..rm_data import EncodedPair, encode_preference_pairs, margin_table
from ..token_logprobs import token_logprobs
from ..training import GroupedOrder
from .base import CancelledBeforeTraining, TrainingRun, check_adapter_folders

POLICY, REFERENCE = "policy", "reference"
HELDOUT_FILE = "heldout_snapshot_id"
# Held-out pairs scored per evaluation (a seeded sample beyond this): enough for a ±5 % interval, bounded cost.
HELDOUT_MAX_PAIRS = 1000
# An implicit-reward difference this small (β-scaled log-probabilities) is a tie, not a win: at step 0 the policy's
# and the reference's log-probabilities agree exactly, later differences are orders of magnitude larger.
TIE_TOLERANCE = 1e-6


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
    lp = token_logprobs(lm_head, hidden.index_select(0, batch.predictor), batch.target,
                        **head_transform(hm.transformer()))
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


class PolicyPairLogprobs(nn.Module):
    """The policy's :func:`pair_logprobs` as a module, so that ``accelerator.prepare`` (DDP) wraps the training
    forward and synchronises the gradients of several processes."""

    def __init__(self, hm: HeadedModel):
        super().__init__()
        self.hm = hm

    def forward(self, batch: DpoBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return pair_logprobs(self.hm, POLICY, batch)


# ---------------------------------------------------------------------------------------------- data
def encode_pairs(project: Project, snapshot_id: int, tokenizer: Any, cfg: DpoConfig,
                 log: Callable[[str], object] | None = None) -> tuple[list[EncodedPair], Any]:
    """A preference snapshot's pairs as DPO trains on them: ties left out (DPO has no target for them), each judged
    strength's margin from ``margins`` over the default table (all 0 without ``use_margins``)."""
    margins = {**DEFAULT_MARGINS, **margin_table(cfg.margins)} if cfg.use_margins else {}
    return encode_preference_pairs(project, snapshot_id, tokenizer, cfg.max_length, margins=margins, log=log)


class ReferencePassProgress:
    """Counts the pairs the reference pass has scored, logs how far it is at most every ``every_s`` seconds (on a
    CPU the pass over a few thousand pairs takes many minutes, and without this the run says nothing until its
    first step) and raises :class:`~engine.trainers.base.CancelledBeforeTraining` when the run is cancelled
    meanwhile."""

    def __init__(self, ctx: JobContext, total: int, accelerator: Any = None, every_s: float = 30.0):
        self.ctx, self.total, self.every_s, self.accelerator = ctx, total, every_s, accelerator
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def __call__(self, pairs_scored: int) -> None:
        """After each round of batches (every process calls it together: the cancel check is shared)."""
        self.done += pairs_scored
        if self.ctx.should_stop(self.accelerator):
            raise CancelledBeforeTraining(
                f"cancelled during the reference pass ({self.done:,} of {self.total:,} pairs scored), before the "
                "first training step: there is no checkpoint to resume")
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            elapsed = now - self.t0
            left = elapsed * (self.total - self.done) / max(1, self.done)
            self.ctx.log(f"reference pass: {self.done:,} of {self.total:,} pairs scored ({elapsed / 60:.1f} min, "
                         f"about {left / 60:.1f} min left)")


@torch.no_grad()
def _score_chunks(hm: HeadedModel, name: str | None, pairs: Sequence[EncodedPair], chunks: list[list[int]],
                  device: torch.device, on_batch: Callable[[int], None] | None, rank: int, world: int
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Summed log-probabilities of chosen and rejected and their token counts, [N] each, of the pairs in this
    process's chunks (chunk j is process ``j % world``'s; the other rows stay 0, for a sum over processes). Every
    process goes through the same number of rounds and calls ``on_batch(n)`` once per round (n: the pairs it scored,
    maybe 0), so a cancel check there is collective."""
    out = [torch.zeros(len(pairs)) for _ in range(4)]
    for r in range(0, len(chunks), world):
        j = r + rank
        idx = chunks[j] if j < len(chunks) else []
        if idx:
            batch = collate_dpo([pairs[i] for i in idx]).to(device)
            for acc, t in zip(out, pair_logprobs(hm, name, batch)):
                acc[idx] = t.float().cpu()
        if on_batch is not None:
            on_batch(len(idx))
    return tuple(out)  # type: ignore[return-value]


def reference_logprobs(hm: HeadedModel, reference: str | None, pairs: list[EncodedPair], batch_size: int,
                       device: torch.device, on_batch: Callable[[int], None] | None = None, *, rank: int = 0,
                       world: int = 1) -> tuple[Tensor, Tensor]:
    """Summed reference log-probabilities of every pair's chosen and rejected continuation, [N] each, in batches of
    pairs of similar length (this process's share of them: see :func:`_score_chunks`)."""
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    rc, rr, _, _ = _score_chunks(hm, reference, pairs, chunks, device, on_batch, rank, world)
    return rc, rr


# ---------------------------------------------------------------------------------------------- held-out pairs
def score_pairs(hm: HeadedModel, name: str | None, pairs: Sequence[EncodedPair], batch_size: int,
                device: torch.device, on_batch: Callable[[int], None] | None = None, *, rank: int = 0,
                world: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Summed log-probabilities of chosen and rejected and their token counts, [N] each, under adapter ``name``
    (``None``: the bare base), in consecutive chunks of ``batch_size`` (this process's share of them: see
    :func:`_score_chunks`): the policy and its reference scored with the same chunks run the same computations, so
    they agree exactly while the policy is the reference."""
    chunks = [list(range(s, min(s + batch_size, len(pairs)))) for s in range(0, len(pairs), batch_size)]
    return _score_chunks(hm, name, pairs, chunks, device, on_batch, rank, world)


def preference_metrics(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor, nc: Tensor, nr: Tensor, margin: Tensor, *,
                       beta: float, loss_type: str, label_smoothing: float = 0.0) -> dict[str, float]:
    """Loss, implicit-reward accuracy (ties count half) with its 95 % Wilson interval, ties, margin and mean rewards
    of pairs whose policy (pc, pr) and reference (rc, rr) log-probabilities are given."""
    n = int(pc.numel())
    if n == 0:
        return {}
    out = preference_loss(pc, pr, rc, rr, nc, nr, beta=beta, loss_type=loss_type, margin=margin,
                          label_smoothing=label_smoothing)
    diff = (out.chosen_rewards - out.rejected_rewards).double()
    ties = int((diff.abs() <= TIE_TOLERANCE).sum())
    wins = int((diff > TIE_TOLERANCE).sum())
    correct = wins + 0.5 * ties
    low, high = wilson_interval(correct, n)
    return {"loss": float(out.losses.mean()), "accuracy": correct / n, "accuracy_low": low, "accuracy_high": high,
            "wins": float(wins), "ties": float(ties), "pairs": float(n), "margin": float(diff.mean()),
            "chosen": float(out.chosen_rewards.mean()), "rejected": float(out.rejected_rewards.mean())}


def heldout_snapshot(project: Project, note: str) -> int | None:
    """A snapshot of the held-out prompts' judgments, or None when there are none (then nothing is written)."""
    from workbench.training_data import preference_snapshot, select_preference_items

    if not any(select_preference_items(project, split="heldout").values()):
        return None
    return preference_snapshot(project, split="heldout", note=note)


def heldout_pairs(project: Project, sid: int, tokenizer: Any, cfg: DpoConfig,
                  max_pairs: int = HELDOUT_MAX_PAIRS) -> list[EncodedPair]:
    """The held-out snapshot's pairs (ties left out), encoded; a sample seeded by the run's seed beyond
    ``max_pairs``, in snapshot order."""
    pairs, _ = encode_pairs(project, sid, tokenizer, cfg)
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
    with Project.open(project_path, migrate=False) as project:
        pairs = heldout_pairs(project, snapshot_id, loaded.tokenizer, cfg, max_pairs)
    if not pairs:
        raise JobError(f"snapshot {snapshot_id} holds no preference pairs to evaluate on")
    ref = score_pairs(hm, REFERENCE if reference_adapter is not None else None, pairs, cfg.batch_size, device)
    pol = score_pairs(hm, POLICY if adapter is not None else None, pairs, cfg.batch_size, device)
    margin = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    res = preference_metrics(pol[0], pol[1], ref[0], ref[1], pol[2], pol[3], margin, beta=cfg.beta,
                             loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing)
    return {"snapshot_id": float(snapshot_id), **res}


# ---------------------------------------------------------------------------------------------- the stage
PREFERENCE_SUMS = ("loss", "accuracy", "margin", "chosen", "rejected")


def add_preference_sums(sums: dict[str, float], out: DPOOutput) -> None:
    """Add a batch's loss, implicit-reward accuracy, margin and rewards to ``sums`` (keys ``PREFERENCE_SUMS``)."""
    sums["loss"] += float(out.losses.detach().sum())
    sums["accuracy"] += float((out.chosen_rewards > out.rejected_rewards).float().sum())
    sums["margin"] += float((out.chosen_rewards - out.rejected_rewards).sum())
    sums["chosen"] += float(out.chosen_rewards.sum())
    sums["rejected"] += float(out.rejected_rewards.sum())


class DpoRun(TrainingRun):
    title = "DPO"
    who = "DPO"
    unit = "pair"
    snapshot_unit = "judged preference pair(s)"
    hint = "judge more comparisons"
    snapshot_kind = "preference"
    card_title = "DPO adapter"
    card_tag = "dpo"

    def __init__(self, ctx: JobContext):
        super().__init__(ctx)
        self.adapter_name = POLICY
        self.held: list[EncodedPair] = []
        self.held_sid: int | None = None
        self.ref_seconds = 0.0

    def check_inputs(self) -> None:
        check_adapter_folders(("adapter_from", self.cfg.adapter_from), ("reference_adapter", self.cfg.reference_adapter))

    def build_model(self) -> None:
        """One base with the trained adapter ``policy`` and the frozen reference (adapter ``reference``, or the bare
        base when there is none)."""
        from ..lora import LoraSettings
        from ..models import load_model

        cfg = self.cfg
        reference_from = cfg.reference_adapter or cfg.adapter_from
        loaded = load_model(cfg.base_model, device=self.device, dtype=cfg.dtype, quantize=cfg.quantize,
                            trust_remote_code=cfg.trust_remote_code)
        loaded.model.config.use_cache = False
        self.hm, self.tokenizer = HeadedModel(loaded.model), loaded.tokenizer
        if cfg.adapter_from:
            self.hm.load_adapter(POLICY, cfg.adapter_from, trainable=True)
        else:
            self.hm.add_adapter(POLICY, LoraSettings.from_run_config(cfg, loaded.model).peft_config(), head=False,
                                seed=cfg.seed)
        self.reference = REFERENCE if reference_from else None
        if reference_from:
            self.hm.load_adapter(REFERENCE, reference_from, trainable=False)
        self.lm = self.hm.transformer()
        # Training mode: transformers checkpoints layers only there. Dropout is the model's own (none in SmolLM2) and
        # the LoRA dropout, which is 0 unless asked; evaluations switch to eval mode and back. The policy's training
        # forward goes through ``module`` (wrapped for several processes by the accelerator).
        self.module = PolicyPairLogprobs(self.hm)

    def new_snapshot(self, project: Project, note: str) -> int:
        from workbench.training_data import preference_snapshot

        return preference_snapshot(project, note=note)

    def count_examples(self, project: Project, snapshot_id: int) -> int:
        from workbench.training_data import preference_pairs

        return sum(1 for p in preference_pairs(project, snapshot_id) if not p.tie)

    def example_tokens(self, example: EncodedPair) -> int:
        return len(example.prompt_ids) + len(example.chosen_ids) + len(example.rejected_ids)  # packed: prompt once

    def load_data(self, project: Project, snapshot_id: int) -> tuple[list[EncodedPair], list[int]]:
        pairs, _ = encode_pairs(project, snapshot_id, self.tokenizer, self.cfg, log=self.ctx.log)
        return pairs, [p.prompt_id for p in pairs]

    def make_order(self) -> GroupedOrder:
        return GroupedOrder([p.length for p in self.train_examples], self.cfg.batch_size, self.cfg.seed)

    def prepare(self) -> None:
        """The held-out pairs, then the reference's log-probabilities of every pair, computed once."""
        cfg, ctx = self.cfg, self.ctx
        held_file = ctx.run_dir / HELDOUT_FILE
        # the main process freezes the held-out snapshot (a resumed run keeps the one it started with); every
        # process reads its id back
        if ctx.is_main and not held_file.is_file():
            sid = heldout_snapshot(ctx.project(), f"dpo run {ctx.run_id}: held-out evaluation")
            held_file.write_text("" if sid is None else str(sid))
        self.wait()
        text = held_file.read_text().strip()
        self.held_sid = int(text) if text else None
        t_ref = time.perf_counter()
        self.hm.eval()
        if self.held_sid is not None:
            with Project.open(ctx.project_path, migrate=False) as project:
                self.held = heldout_pairs(project, self.held_sid, self.tokenizer, cfg)
        self.held_margin = torch.tensor([p.margin for p in self.held], dtype=torch.float32)
        progress = ReferencePassProgress(ctx, len(self.train_examples) + len(self.eval_examples) + len(self.held),
                                         self.accelerator)
        ref, bs, device, share = self.reference, cfg.batch_size, self.device, {"rank": self.rank, "world": self.world}
        try:
            # each process scores its share of the batches; the sums over processes give every process all of them
            self.ref_c, self.ref_r = self.sum_tensors(
                *reference_logprobs(self.hm, ref, self.train_examples, bs, device, progress, **share))
            self.eval_ref = (self.sum_tensors(*reference_logprobs(self.hm, ref, self.eval_examples, bs, device,
                                                                  progress, **share))
                             if self.eval_examples else None)
            self.held_ref = (self.sum_tensors(*score_pairs(self.hm, ref, self.held, bs, device, progress, **share))
                             if self.held else None)
        finally:
            self.ref_seconds = time.perf_counter() - t_ref
        # The policy starts as the reference: a fresh adapter (LoRA B = 0) on the base the reference is, or the
        # reference adapter itself. Then its log-probabilities equal the reference's exactly and need no second pass.
        self.starts_as_reference = (ref is None and not cfg.adapter_from) or (
            bool(cfg.adapter_from) and cfg.reference_adapter in (None, "", cfg.adapter_from))

    def describe_setting(self) -> str:
        return f" ({self.cfg.loss_type}, beta {self.cfg.beta})"

    def describe(self) -> str:
        reference = self.cfg.reference_adapter or self.cfg.adapter_from
        return (f"{super().describe()}, reference = "
                f"{'adapter ' + str(reference) if self.reference else 'the bare base'}")

    def on_train_start(self) -> None:
        if self.held and self.step == 0:
            start = self.evaluate_heldout(at_start=True)
            self.ctx.metrics(0, start)
            self.ctx.log(f"held-out implicit-reward accuracy before training: {start['heldout/accuracy']:.3f} on "
                         f"{len(self.held)} pairs of snapshot {self.held_sid} ({int(start['heldout/ties'])} ties, "
                         "counted as half)")

    def loss(self, batch: DpoBatch, rc: Tensor, rr: Tensor, *, training: bool = False) -> DPOOutput:
        """The configured loss of the policy on ``batch`` against the reference's log-probabilities ``rc``/``rr``
        (``training``: through ``module``, which synchronises the gradients of several processes)."""
        pc, pr, nc, nr = self.module(batch) if training else pair_logprobs(self.hm, POLICY, batch)
        return preference_loss(pc, pr, rc.to(self.device), rr.to(self.device), nc, nr, beta=self.cfg.beta,
                               loss_type=self.cfg.loss_type, margin=batch.margin,
                               label_smoothing=self.cfg.label_smoothing)

    def accumulate(self, indices: list[int]) -> dict[str, float]:
        sums = dict.fromkeys((*PREFERENCE_SUMS, "pairs", "tokens"), 0.0)
        for idx, sync in self.micro_batches(indices):
            batch = collate_dpo([self.train_examples[i] for i in idx]).to(self.device)
            # the backward recomputes checkpointed layers, which need the pair attention again
            with sync, pairs_attention(self.hm.transformer()):
                out = self.loss(batch, self.ref_c[idx], self.ref_r[idx], training=True)
                # several processes: the accelerator averages their gradients, so each weighs its pairs by world
                self.backward(out.losses.sum() * self.world / len(indices))
            add_preference_sums(sums, out)
            sums["pairs"] += len(idx)
            sums["tokens"] += batch.n_tokens
        return sums

    def train_metrics(self, sums: dict[str, float]) -> dict[str, Any]:
        n = sums["pairs"]
        return {"train/loss": sums["loss"] / n, "rewards/chosen": sums["chosen"] / n,
                "rewards/rejected": sums["rejected"] / n, "rewards/accuracy": sums["accuracy"] / n,
                "rewards/margin": sums["margin"] / n}

    def has_evaluation(self) -> bool:
        return bool(self.eval_examples or self.held)

    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.eval_examples:
            out.update(self.evaluate_split())
        if self.held:
            out.update(self.evaluate_heldout())
        return out

    @torch.no_grad()
    def evaluate_split(self) -> dict[str, float]:
        """The ``eval/`` metrics: the loss and implicit rewards on the held-out share of the training snapshot."""
        assert self.eval_ref is not None
        self.hm.eval()
        bs, evals = self.cfg.batch_size, self.eval_examples
        sums = dict.fromkeys(PREFERENCE_SUMS, 0.0)
        for s in range(self.rank * bs, len(evals), bs * self.world):  # this process's share of the batches
            chunk = evals[s : s + bs]
            add_preference_sums(sums, self.loss(collate_dpo(chunk).to(self.device), self.eval_ref[0][s : s + len(chunk)],
                                                self.eval_ref[1][s : s + len(chunk)]))
        sums = self.sum_over_processes(sums)
        return {f"eval/{k}": v / len(evals) for k, v in sums.items()}

    def evaluate_heldout(self, at_start: bool = False) -> dict[str, float]:
        """The ``heldout/`` metrics: implicit-reward accuracy on the held-out prompts' judgments."""
        assert self.held_ref is not None
        self.hm.eval()
        pol = (self.held_ref if at_start and self.starts_as_reference
               else self.sum_tensors(*score_pairs(self.hm, POLICY, self.held, self.cfg.batch_size, self.device,
                                                  rank=self.rank, world=self.world)))
        res = preference_metrics(pol[0], pol[1], self.held_ref[0], self.held_ref[1], pol[2], pol[3], self.held_margin,
                                 beta=self.cfg.beta, loss_type=self.cfg.loss_type,
                                 label_smoothing=self.cfg.label_smoothing)
        return {f"heldout/{k}": v for k, v in res.items()}

    def summary_extras(self) -> dict[str, Any]:
        return {"reference_s": round(self.ref_seconds, 2)}

    def card_description(self) -> list[str]:
        ref = self.cfg.reference_adapter or self.cfg.adapter_from
        return [f"A LoRA adapter trained by DPO in RLHF Workbench, with the {self.cfg.loss_type} preference loss "
                f"(beta {self.cfg.beta}) against a frozen reference: "
                f"{'the adapter `' + str(ref) + '`' if ref else 'the bare base model'}."]


def run(ctx: JobContext) -> JobResult:
    return DpoRun(ctx).run()
