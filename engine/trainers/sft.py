"""Supervised fine-tuning with LoRA on the expert's demonstrations: the ``sft`` stage.

Data: a ``sft`` snapshot (``workbench.training_data``: demonstrations, and with ``include_winning_responses`` the
responses that won a judged comparison clearly). Each example is rendered with the tokenizer's chat template and
left-truncated (:mod:`engine.packing`); the loss covers the response tokens only.

Step: each micro-batch is packed into one row without padding and attention runs per example; the loss of an
optimizer step is the mean over all its trained tokens (summed per micro-batch and divided by the step's token
count, so gradient accumulation and several processes give the same gradient as one big batch). Evaluation: the
token-weighted loss on the held-out prompts' examples. Everything else (snapshot, optimizer and schedule,
checkpoints and exact resume, cancel, several processes, output) is the training skeleton's
(:mod:`engine.trainers.base`).

Output in the run folder: ``adapter/`` (``PeftModel.from_pretrained`` loads it) with a model card ``README.md``
and the run's ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.store import Project

from ..jobs import JobResult
from ..jobs.context import JobContext
from ..lora import load_adapter_weights
from ..packing import Encoded, PackedBatch, encode_chat, pack, packed_token_losses, register_packed_attention
from ..training import check_finite, load_for_training
from .base import TrainingRun


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


class SftRun(TrainingRun):
    title = "SFT"
    who = "training"
    snapshot_unit = "SFT example(s)"
    hint = "write more demonstrations"
    snapshot_kind = "sft"
    card_title = "SFT adapter"
    card_tag = "sft"

    def build_model(self) -> None:
        register_packed_attention()
        self.peft, self.tokenizer = load_for_training(self.cfg, self.device, attn_implementation="wb_packed")
        self.lm = self.peft.get_base_model()
        self.module = PackedLMLoss(self.peft)

    def new_snapshot(self, project: Project, note: str) -> int:
        from workbench.training_data import sft_snapshot

        return sft_snapshot(project, include_winners=self.cfg.include_winning_responses, note=note)

    def count_examples(self, project: Project, snapshot_id: int) -> int:
        from workbench.training_data import sft_examples

        return len(sft_examples(project, snapshot_id))

    def load_data(self, project: Project, snapshot_id: int) -> tuple[list[Encoded], list[int]]:
        from workbench.training_data import sft_examples

        encoded: list[Encoded] = []
        prompt_ids: list[int] = []
        truncated = 0
        for ex in sft_examples(project, snapshot_id):
            enc = encode_chat(self.tokenizer, ex.prompt, ex.completion, self.cfg.max_length)
            if enc.n_targets <= 0:
                continue
            truncated += enc.truncated
            encoded.append(enc)
            prompt_ids.append(ex.prompt_id)
        if truncated:
            self.ctx.log(f"{truncated} conversation(s) longer than max_length {self.cfg.max_length} lost their "
                         "oldest turns")
        return encoded, prompt_ids

    def accumulate(self, indices: list[int]) -> dict[str, float]:
        step_targets = sum(self.train_examples[i].n_targets for i in indices)
        sums = {"loss": 0.0, "targets": 0.0, "tokens": 0.0}
        for micro, sync in self.micro_batches(indices):
            batch = pack([self.train_examples[i] for i in micro]).to(self.device)
            with sync:
                loss_sum = _call(self.module, batch)
                # DDP averages gradients over processes; scaling by world makes the result the global token mean.
                self.backward(loss_sum * (self.world / step_targets))
            sums["loss"] += float(loss_sum.detach())
            sums["targets"] += batch.n_targets
            sums["tokens"] += batch.n_tokens
        return sums

    def train_metrics(self, sums: dict[str, float]) -> dict[str, Any]:
        return {"train/loss": sums["loss"] / sums["targets"]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Token-weighted mean loss over the held-out examples (shared out across processes)."""
        self.module.eval()
        bs = self.cfg.batch_size
        sums = {"loss": 0.0, "targets": 0.0}
        for i in range(self.rank * bs, len(self.eval_examples), bs * self.world):
            batch = pack(self.eval_examples[i:i + bs]).to(self.device)
            sums["loss"] += float(_call(self.module, batch))
            sums["targets"] += batch.n_targets
        sums = self.sum_over_processes(sums)
        value = sums["loss"] / sums["targets"] if sums["targets"] > 0 else float("nan")
        check_finite(value, 0, "eval loss")
        return {"eval/loss": value}

    def save_weights(self, folder: Path) -> None:
        self.peft.save_pretrained(folder)

    def load_weights(self, checkpoint: Path) -> None:
        load_adapter_weights(self.peft, checkpoint / "adapter", self.adapter_name)

    def card_description(self) -> list[str]:
        return ["A LoRA adapter trained by supervised fine-tuning in RLHF Workbench, on the expert's demonstrations."]


def run(ctx: JobContext) -> JobResult:
    return SftRun(ctx).run()
