"""The reward model: base + LoRA adapter ``default`` + scalar head, trained on judged preference pairs; the ``rm``
stage.

Data: a ``preference`` snapshot (``workbench.training_data``): ties included when ``ties_as_half``, retests only
when ``include_retests``, retracted judgments never; k-wise rankings arrive already expanded into pairs. Margins
come from the judged strength (``RewardConfig.margins``; the key ``none`` is the margin of a judgment without one).
Each pair is encoded once (:func:`engine.rm_data.encode_preference_pairs`, oldest turns dropped first) and batched
in the packed layout (prompt once per pair).

Model: :class:`engine.reward_model.HeadedModel` (fresh, or continued from ``adapter_from``, with that folder's head
when it has one). Loss: Bradley–Terry with margin, ties as 0.5 targets, plus ``center_rewards · mean((r_c + r_r)²)``
when set. Everything else (snapshot, split by prompt, optimizer and schedule, gradient accumulation over several
processes, checkpoints and exact resume, cancel, output) is the training skeleton's (:mod:`engine.trainers.base`);
a checkpoint's ``adapter/`` is a complete reward model, head included.

Metrics (``/``-separated keys): ``train/loss``, ``train/accuracy``, ``train/reward_mean``, ``train/reward_std``,
``train/margin`` (mean r_c − r_r) and the skeleton's ``train/lr``, ``train/grad_norm``, ``train/tokens_per_s``…;
``eval/loss``, ``eval/accuracy``, ``eval/accuracy_low``/``eval/accuracy_high`` (95 % Wilson interval),
``eval/pairs``, ``eval/reward_mean``, ``eval/reward_std``, ``eval/margin``.

Output in the run folder: ``adapter/`` (what ``PeftModel.from_pretrained`` loads, plus ``head.safetensors``), the
tokenizer, ``config.yaml`` and a model card ``README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from workbench.configs import RewardConfig
from workbench.evaluation import wilson_interval
from workbench.store import Project

from ..jobs import JobResult
from ..jobs.context import JobContext
from ..losses import bradley_terry_loss
from ..pair_attention import pairs_attention
from ..reward_model import HEADED_USAGE, HeadedModel, pair_rewards
from ..rm_data import EncodedPair, collate_pairs, encode_preference_pairs, margin_table, pad_token_id
from ..training import ADAPTER, add_training_head, load_headed_for_training
from .base import TrainingRun


class PairRewards(nn.Module):
    """(r_chosen, r_rejected) of a batch; a module so ``accelerator.prepare`` (DDP) wraps the whole computation."""

    def __init__(self, model: HeadedModel, name: str = ADAPTER):
        super().__init__()
        self.model = model
        self.name = name

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return pair_rewards(self.model, self.name, batch)


def build_reward_model(cfg: RewardConfig, device: torch.device) -> tuple[HeadedModel, Any]:
    """The model the ``rm`` stage trains: base + trainable adapter ``default`` + its scalar head."""
    hm, tokenizer = load_headed_for_training(cfg, device)
    add_training_head(hm, cfg)
    return hm, tokenizer


def encode_pairs(project: Project, snapshot_id: int, tokenizer: Any, cfg: RewardConfig,
                 log: Callable[[str], object] | None = None) -> tuple[list[EncodedPair], Any]:
    """A preference snapshot's pairs as the ``rm`` stage trains on them (margins and ties per ``cfg``)."""
    return encode_preference_pairs(project, snapshot_id, tokenizer, cfg.max_length, margins=margin_table(cfg.margins),
                                   keep_ties=cfg.ties_as_half, log=log)


@torch.no_grad()
def pair_sums(scorer: nn.Module, pairs: Sequence[EncodedPair], batch_size: int, device: torch.device,
              centring_coef: float = 0.0, *, rank: int = 0, world: int = 1) -> dict[str, float]:
    """Sums over this process's share of ``pairs`` (every ``world``-th batch from the ``rank``-th) that
    :func:`pair_metrics` turns into metrics, so several processes can add theirs up first."""
    was_training = scorer.training
    scorer.eval()
    sums = dict.fromkeys(("loss", "pairs", "correct", "counted", "reward_sum", "reward_sq", "margin"), 0.0)
    for i in range(rank * batch_size, len(pairs), batch_size * world):
        batch = collate_pairs(pairs[i:i + batch_size]).to(device)
        rc, rr = scorer(batch)
        rc, rr = rc.float(), rr.float()
        out = bradley_terry_loss(rc, rr, batch.margin, batch.tie, centring_coef=centring_coef)
        keep = ~batch.tie
        r = torch.cat([rc, rr]).double()
        sums["loss"] += float(out.loss) * batch.size
        sums["pairs"] += batch.size
        sums["correct"] += float(((rc > rr) & keep).sum())
        sums["counted"] += float(keep.sum())
        sums["reward_sum"] += float(r.sum())
        sums["reward_sq"] += float((r * r).sum())
        sums["margin"] += float((rc - rr).sum())
    if was_training:
        scorer.train()
    return sums


def pair_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Loss, accuracy (ties not counted) with its Wilson interval, reward mean/spread and mean margin."""
    n, counted = sums["pairs"], sums["counted"]
    if n == 0:
        return {}
    mean = sums["reward_sum"] / (2 * n)
    low, high = wilson_interval(int(sums["correct"]), int(counted))
    return {
        "loss": sums["loss"] / n, "accuracy": sums["correct"] / counted if counted else float("nan"),
        "accuracy_low": low, "accuracy_high": high, "pairs": n, "reward_mean": mean,
        "reward_std": math.sqrt(max(0.0, sums["reward_sq"] / (2 * n) - mean * mean)), "margin": sums["margin"] / n,
    }


def evaluate_pairs(scorer: nn.Module, pairs: Sequence[EncodedPair], batch_size: int, device: torch.device,
                   centring_coef: float = 0.0) -> dict[str, float]:
    """:func:`pair_metrics` of ``pairs`` in this process."""
    return pair_metrics(pair_sums(scorer, pairs, batch_size, device, centring_coef))


class RewardRun(TrainingRun):
    title = "reward model"
    who = "a reward model"
    unit = "pair"
    snapshot_unit = "judged preference pair(s) on training prompts"
    hint = "judge more comparisons"
    snapshot_kind = "preference"
    card_title = "Reward model"
    card_tag = "reward-model"
    card_usage = HEADED_USAGE

    def build_model(self) -> None:
        self.hm, self.tokenizer = build_reward_model(self.cfg, self.device)
        self.lm = self.hm.transformer()
        self.module = PairRewards(self.hm)

    def new_snapshot(self, project: Project, note: str) -> int:
        from workbench.training_data import preference_snapshot

        return preference_snapshot(project, include_ties=self.cfg.ties_as_half,
                                   include_retests=self.cfg.include_retests, note=note)

    def count_examples(self, project: Project, snapshot_id: int) -> int:
        from workbench.training_data import preference_pairs

        return len(preference_pairs(project, snapshot_id, margins=margin_table(self.cfg.margins)))

    def example_tokens(self, example: EncodedPair) -> int:
        return len(example.prompt_ids) + len(example.chosen_ids) + len(example.rejected_ids)  # packed: prompt once

    def load_data(self, project: Project, snapshot_id: int) -> tuple[list[EncodedPair], list[int]]:
        pairs, _ = encode_pairs(project, snapshot_id, self.tokenizer, self.cfg, log=self.ctx.log)
        return pairs, [p.prompt_id for p in pairs]

    def accumulate(self, indices: list[int]) -> dict[str, float]:
        n_step = len(indices)
        pad_id = pad_token_id(self.tokenizer)
        sums = dict.fromkeys(("loss", "correct", "counted", "reward_sum", "reward_sq", "margin", "pairs", "tokens"), 0.0)
        for micro, sync in self.micro_batches(indices):
            batch = collate_pairs([self.train_examples[i] for i in micro], pad_id).to(self.device)
            # the attention switch spans the backward pass too: gradient checkpointing recomputes the forward there
            with sync, pairs_attention(self.hm.transformer()):
                rc, rr = self.module(batch)
                out = bradley_terry_loss(rc.float(), rr.float(), batch.margin, batch.tie,
                                         centring_coef=self.cfg.center_rewards)
                # DDP averages over processes; weighting by the micro-batch's share of the step's pairs (times the
                # process count) makes the gradient that of the mean over every pair of the step.
                self.backward(out.loss * (len(micro) * self.world / n_step))
            with torch.no_grad():
                rcd, rrd = rc.detach().double(), rr.detach().double()
                keep = ~batch.tie
                r = torch.cat([rcd, rrd])
                sums["loss"] += float(out.loss.detach()) * len(micro)
                sums["correct"] += float(((rcd > rrd) & keep).sum())
                sums["counted"] += float(keep.sum())
                sums["reward_sum"] += float(r.sum())
                sums["reward_sq"] += float((r * r).sum())
                sums["margin"] += float((rcd - rrd).sum())
                sums["pairs"] += len(micro)
            sums["tokens"] += batch.n_tokens
        return sums

    def train_metrics(self, sums: dict[str, float]) -> dict[str, Any]:
        n, counted = sums["pairs"], sums["counted"]
        mean = sums["reward_sum"] / max(1.0, 2 * n)
        return {
            "train/loss": sums["loss"] / max(1.0, n),
            "train/accuracy": sums["correct"] / counted if counted else float("nan"), "train/reward_mean": mean,
            "train/reward_std": math.sqrt(max(0.0, sums["reward_sq"] / max(1.0, 2 * n) - mean * mean)),
            "train/margin": sums["margin"] / max(1.0, n),
        }

    def evaluate(self) -> dict[str, float]:
        sums = pair_sums(self.module, self.eval_examples, self.cfg.batch_size, self.device, self.cfg.center_rewards,
                         rank=self.rank, world=self.world)
        return {f"eval/{k}": v for k, v in pair_metrics(self.sum_over_processes(sums)).items()}

    def card_description(self) -> list[str]:
        return ["Trained in RLHF Workbench: a LoRA adapter plus a scalar reward head (`head.safetensors`, read at the "
                "last token of the conversation), trained with a Bradley–Terry loss and a margin from the judged "
                "strength."]


def run(ctx: JobContext) -> JobResult:
    return RewardRun(ctx).run()
