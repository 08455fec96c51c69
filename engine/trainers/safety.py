"""The safety classifier: base + LoRA + one logit per flag category, trained on the project's safety flags; the
``safety`` stage.

Data: a ``safety`` snapshot (``workbench.training_data.safety_snapshot`` / ``safety_examples``): one example per
flagged text — a response in the context of its prompt, or a prompt on its own for prompt-level flags — with the
categories present, the categories checked and known absent, and every other category **unknown**. The loss is
binary cross-entropy over the known cells only (:func:`engine.losses.masked_bce_with_logits`): an unflagged
category is not evidence of absence unless someone said so (XSTest's safe prompts and the moderation set's 0
labels do say so).

Categories: the config's list, else every category with at least one known label in the snapshot, in the
project's taxonomy order. They are stored in the head's metadata, so a loaded classifier knows its outputs, and in
each checkpoint, so a resumed run checks it still learns the same ones.

Metrics: ``train/loss``; ``eval/loss``, ``eval/accuracy`` (over every known held-out cell),
``eval/accuracy/<category>`` and ``eval/known/<category>`` (held-out cells with a label), ``eval/macro_accuracy``.
The rest (snapshot, split, checkpoints, resume, cancel, several processes, output) is the training skeleton's
(:mod:`engine.trainers.base`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.store import Project

from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from ..losses import masked_bce_with_logits
from ..pair_attention import pairs_attention
from ..reward_model import HEADED_USAGE, HeadedModel, packed_scores
from ..rm_data import ChatEncoder
from ..training import ADAPTER, add_training_head, load_headed_for_training
from .base import TrainingRun


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

    def __init__(self, model: HeadedModel, name: str = ADAPTER):
        super().__init__()
        self.model = model
        self.name = name

    def forward(self, sequences: list[list[int]]) -> torch.Tensor:
        return packed_scores(self.model, self.name, sequences).float()


def _targets(items: Sequence[LabelledText], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([x.labels for x in items], device=device), torch.tensor([x.known for x in items], device=device))


@torch.no_grad()
def label_sums(scorer: nn.Module, items: Sequence[LabelledText], n_categories: int, batch_size: int,
               threshold: float = 0.5, *, rank: int = 0, world: int = 1) -> dict[str, float]:
    """Held-out loss and correct predictions at ``threshold`` per category, over the known cells of this process's
    share of ``items`` (every ``world``-th batch from the ``rank``-th); :func:`label_metrics` reads them."""
    was_training = scorer.training
    scorer.eval()
    loss_sum = 0.0
    correct = torch.zeros(n_categories, dtype=torch.float64)
    counted = torch.zeros(n_categories, dtype=torch.float64)
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
    if was_training:
        scorer.train()
    return {"loss": loss_sum, **{f"correct/{k}": float(v) for k, v in enumerate(correct)},
            **{f"known/{k}": float(v) for k, v in enumerate(counted)}}


def label_metrics(sums: dict[str, float], categories: Sequence[str]) -> dict[str, float]:
    """Loss and accuracy, overall and per category, from :func:`label_sums` (added up over processes)."""
    correct = [sums[f"correct/{k}"] for k in range(len(categories))]
    counted = [sums[f"known/{k}"] for k in range(len(categories))]
    n = sum(counted)
    if n == 0:
        return {}
    out = {"loss": sums["loss"] / n, "accuracy": sum(correct) / n}
    accs = []
    for k, cat in enumerate(categories):
        out[f"known/{cat}"] = counted[k]
        if counted[k] > 0:
            out[f"accuracy/{cat}"] = correct[k] / counted[k]
            accs.append(out[f"accuracy/{cat}"])
    out["macro_accuracy"] = sum(accs) / len(accs)
    return out


class SafetyRun(TrainingRun):
    title = "safety classifier"
    who = "a safety classifier"
    unit = "text"
    snapshot_unit = "text(s) with safety labels on training prompts"
    hint = "flag more responses, or import XSTest / moderation data"
    snapshot_kind = "safety"
    card_title = "Safety classifier"
    card_tag = "safety-classifier"
    card_usage = HEADED_USAGE

    def build_model(self) -> None:
        # the head comes with the data: one output per category the snapshot has labels for (load_data)
        self.hm, self.tokenizer = load_headed_for_training(self.cfg, self.device)
        self.lm = self.hm.transformer()
        self.module = SafetyLogits(self.hm)

    def new_snapshot(self, project: Project, note: str) -> int:
        from workbench.training_data import safety_snapshot

        return safety_snapshot(project, note=note)

    def count_examples(self, project: Project, snapshot_id: int) -> int:
        from workbench.training_data import safety_examples

        return len(safety_examples(project, snapshot_id))

    def load_data(self, project: Project, snapshot_id: int) -> tuple[list[LabelledText], list[int]]:
        from workbench.training_data import safety_examples

        examples = safety_examples(project, snapshot_id)
        self.categories = choose_categories(examples, self.cfg.categories, [k for k, *_ in project.categories()])
        if not self.categories:
            raise JobError(f"snapshot {snapshot_id} has no category with a known label")
        add_training_head(self.hm, self.cfg, out_features=len(self.categories), kind="safety", labels=self.categories)
        items = encode_examples(examples, self.categories, ChatEncoder(self.tokenizer, self.cfg.max_length))
        return items, [x.prompt_id for x in items]

    def describe_setting(self) -> str:
        return f" over {', '.join(self.categories)}"

    def accumulate(self, indices: list[int]) -> dict[str, float]:
        step_known = sum(sum(self.train_examples[i].known) for i in indices)
        sums = {"loss": 0.0, "known": 0.0, "tokens": 0.0}
        for micro, sync in self.micro_batches(indices):
            items = [self.train_examples[i] for i in micro]
            # the attention switch spans the backward pass too: gradient checkpointing recomputes the forward there
            with sync, pairs_attention(self.hm.transformer()):
                logits = self.module([x.ids for x in items])
                labels, known = _targets(items, logits.device)
                n_known = float(known.sum())
                loss = masked_bce_with_logits(logits, labels, known)
                # weight by this micro-batch's share of the step's known cells: the step's loss is their mean
                self.backward(loss * (n_known * self.world / max(1.0, step_known)))
            sums["loss"] += float(loss.detach()) * n_known
            sums["known"] += n_known
            sums["tokens"] += sum(len(x.ids) for x in items)
        return sums

    def train_metrics(self, sums: dict[str, float]) -> dict[str, Any]:
        return {"train/loss": sums["loss"] / max(1.0, sums["known"])}

    def evaluate(self) -> dict[str, float]:
        sums = label_sums(self.module, self.eval_examples, len(self.categories), self.cfg.batch_size,
                          self.cfg.threshold, rank=self.rank, world=self.world)
        return {f"eval/{k}": v for k, v in label_metrics(self.sum_over_processes(sums), self.categories).items()}

    def extra_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return {"categories": self.categories}, {}

    def restore_extra_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if state["categories"] != self.categories:
            raise JobError(f"the checkpoint learns the categories {', '.join(state['categories'])}, this run "
                           f"{', '.join(self.categories)}; resume needs the same snapshot and settings")

    def card_description(self) -> list[str]:
        return [f"Trained in RLHF Workbench: a LoRA adapter plus a multi-label head (`head.safetensors`, one logit per "
                f"category: {', '.join(self.categories)}), trained with binary cross-entropy on the known labels only."]


def run(ctx: JobContext) -> JobResult:
    return SafetyRun(ctx).run()
