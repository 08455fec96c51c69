"""Where PPO's sequence reward and safety cost come from.

A reward source is called with the rollout's conversations and response texts and returns one score per row:

- :class:`AdapterScorer`: an adapter + head on the shared base (``PpoRoles``): the project's reward model, or the
  safety classifier (then the score is the largest label probability, a cost in [0, 1]). The response is
  re-encoded with the chat template exactly as the reward model saw its training pairs
  (:class:`engine.rm_data.ChatEncoder`), so the head reads the same final token it was trained on. The rows are
  packed (``engine.trainers.ppo.packing``): the responses to one prompt share its tokens, and nothing is padded.
- :class:`SeparateScorer`: a reward model on another base (an adapter folder + head with ``base`` given) or a full
  sequence-classification model folder; it has its own weights and tokenizer.
- :class:`RuleReward`: a plain function of (conversation, text), e.g. ``rule:contains:WORD`` (+1 when the response
  contains WORD): for tests and demonstrations of the loop.

:func:`reward_from_spec` builds the right one from a config string.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ...reward_model import head_at_packed
from ...rm_data import ChatEncoder, pad_token_id
from .packing import chunks_of_groups, pack_groups
from .padding import pad_rows
from .roles import PpoRoles

Messages = list[dict[str, str]]


class RewardSource:
    """Scores [B] for (conversation, response text) rows."""

    kind = "reward"

    def __call__(self, prompts: Sequence[Messages], texts: Sequence[str]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _encode_rows(encoder: ChatEncoder, prompts: Sequence[Messages], texts: Sequence[str]) -> list[list[int]]:
    rows = []
    for msgs, text in zip(prompts, texts):
        p, r, _ = encoder.encode_single(msgs, text)
        rows.append(p + r)
    return rows


class AdapterScorer(RewardSource):
    """Head ``name`` on adapter ``name`` of the shared base; ``as_cost``: the max sigmoid over its labels."""

    def __init__(self, roles: PpoRoles, name: str, tokenizer, max_length: int, batch_size: int, as_cost: bool = False):
        self.roles, self.name, self.batch_size, self.as_cost = roles, name, batch_size, as_cost
        self.kind = "cost" if as_cost else "reward"
        self.encoder = ChatEncoder(tokenizer, max_length)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Messages], texts: Sequence[str]) -> Tensor:
        # Packed (engine.trainers.ppo.packing): the responses to one prompt share its tokens, and nothing is padded.
        encoded = [self.encoder.encode_single(msgs, text)[:2] for msgs, text in zip(prompts, texts)]
        ps, rs = [p for p, _ in encoded], [r for _, r in encoded]
        out = []
        for a, b in chunks_of_groups(ps, self.batch_size):
            packed = pack_groups(ps[a:b], rs[a:b], device=self.roles.device)
            scores = head_at_packed(self.roles.hm, self.name, packed.input_ids, packed.position_ids, packed.segments,
                                    packed.last_index()).float()
            out.append(torch.sigmoid(scores).max(-1).values if self.as_cost else scores[:, 0])
        return torch.cat(out).cpu()


class SeparateScorer(RewardSource):
    """A reward model with its own weights: an adapter folder + head on ``base``, or a full classifier folder."""

    def __init__(self, path: str | os.PathLike[str], *, base: str | None, device: torch.device, max_length: int,
                 batch_size: int, as_cost: bool = False, trust_remote_code: bool = False):
        from ...models import load_model
        from ...reward_model import HeadedModel

        self.batch_size, self.as_cost = batch_size, as_cost
        self.kind = "cost" if as_cost else "reward"
        path = Path(path)
        if (path / "config.json").is_file():
            from transformers import AutoModelForSequenceClassification

            loaded = load_model(str(path), device=device, quantize="none", model_class=AutoModelForSequenceClassification,
                                trust_remote_code=trust_remote_code)
            self.classifier, self.hm = loaded.model.eval(), None
        else:
            if not base:
                raise ValueError(f"{path}: an adapter reward model on another base needs that base named")
            loaded = load_model(base, device=device, quantize="none", trust_remote_code=trust_remote_code)
            self.hm = HeadedModel(loaded.model)
            self.hm.load_adapter("reward", path)
            self.hm.eval()
            self.classifier = None
        self.encoder = ChatEncoder(loaded.tokenizer, max_length)
        self.pad_id = pad_token_id(loaded.tokenizer)
        self.device = loaded.device

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Messages], texts: Sequence[str]) -> Tensor:
        rows = _encode_rows(self.encoder, prompts, texts)
        out = []
        for i in range(0, len(rows), self.batch_size):
            ids, mask = pad_rows(rows[i : i + self.batch_size], self.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            if self.classifier is not None:
                scores = self.classifier(input_ids=ids, attention_mask=mask).logits.float()
            else:
                scores = self.hm.score("reward", ids, mask).float()
            out.append(torch.sigmoid(scores).max(-1).values if self.as_cost else scores[:, 0])
        return torch.cat(out).cpu()


class RuleReward(RewardSource):
    """A reward computed by a plain function of (conversation, response text)."""

    def __init__(self, fn: Callable[[Messages, str], float], description: str = "rule"):
        self.fn, self.description = fn, description

    def __call__(self, prompts: Sequence[Messages], texts: Sequence[str]) -> Tensor:
        return torch.tensor([float(self.fn(p, t)) for p, t in zip(prompts, texts)], dtype=torch.float32)


def contains_rule(word: str) -> RuleReward:
    """+1 when the response contains ``word`` (case-insensitive), else 0."""
    w = word.lower()
    return RuleReward(lambda _p, text: 1.0 if w in text.lower() else 0.0, f"contains {word!r}")


RULE_PREFIX = "rule:"


def is_rule_spec(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(RULE_PREFIX)


def rule_from_spec(spec: str) -> RuleReward:
    """``rule:contains:WORD`` → :func:`contains_rule`."""
    parts = spec[len(RULE_PREFIX):].split(":", 1)
    if len(parts) == 2 and parts[0] == "contains" and parts[1]:
        return contains_rule(parts[1])
    raise ValueError(f"unknown rule reward {spec!r} (known: rule:contains:WORD)")
