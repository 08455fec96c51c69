"""The :class:`Experience` record: one rollout of PPO, every tensor documented with its shape.

Shapes: ``B`` = sequences in the rollout, ``P`` = prompt width (prompts are left-padded to it), ``R`` = response
width (responses are right-padded to it), ``L = P + R``. Per-token tensors ([B, R]) are aligned with the response
tokens: column ``t`` is about response token ``t`` (its log-probability under the policy that sampled it, the value
of the state just before it, its reward, its advantage). ``response_mask`` is 1 on real response tokens (including
the end-of-sequence token when one was produced) and 0 on padding; it is a prefix of each row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from .packing import PackedGroups, pack_groups


@dataclass
class Experience:
    sequences: Tensor  # [B, L] long: prompt (left-padded to P) then response (right-padded to R)
    attention_mask: Tensor  # [B, L] long: 1 on real prompt and response tokens
    response_mask: Tensor  # [B, R] float: 1 on real response tokens (a prefix of each row)
    logprobs: Tensor  # [B, R] float: log π_old(token) of the policy that sampled it
    ref_logprobs: Tensor  # [B, R] float: log π_ref(token) of the frozen reference
    values: Tensor  # [B, R] float: V_old(state before the token), value adapter + head
    rewards: Tensor  # [B, R] float: −β·(logπ − logπ_ref) per token, plus the sequence reward at the last token
    advantages: Tensor  # [B, R] float: GAE(γ, λ) advantages (whitened by the trainer before use)
    returns: Tensor  # [B, R] float: advantages + values, the value targets
    score: Tensor  # [B] float: raw score of the reward model (or rule) for the whole response
    cost: Tensor  # [B] float: safety cost in [0, 1] (0 without a safety classifier)
    reward: Tensor  # [B] float: the sequence reward put at the last token (normalised, clipped, minus cost and
    #                             the penalty for a response cut off before end-of-sequence)
    kl: Tensor  # [B] float: Σ_t (logπ − logπ_ref) over the response: KL estimate in nats per response
    entropy: Tensor  # [B] float: mean per-token entropy of the policy's distribution over the response
    finished: Tensor  # [B] bool: the response ended with an end-of-sequence token
    prompt_index: Tensor  # [B] long: which prompt of the rollout batch each row answers
    prompt_width: int = 0  # P
    bottom: Tensor | None = None  # [B, L, H] hidden state after the layers no role adapts (PpoRoles.bottom), or None

    @property
    def batch_size(self) -> int:
        return int(self.sequences.shape[0])

    @property
    def response_width(self) -> int:
        return int(self.response_mask.shape[1])

    @property
    def response_length(self) -> Tensor:
        """[B] long: real response tokens per row."""
        return self.response_mask.sum(1).long()

    def select(self, index: Tensor | list[int]) -> "Experience":
        """The rows ``index``, with the response columns trimmed to the longest selected response and the prompt
        columns to the longest selected prompt (less padding in a mini-batch means less compute: prompts are
        left-padded to the longest of the whole rollout, often several times a short one's length). Positions
        count real tokens only (``position_ids_of``), so dropping columns that are padding in every selected row
        changes no position and no attended token."""
        idx = torch.as_tensor(index, dtype=torch.long)
        width = max(1, int(self.response_mask[idx].sum(1).max().item()))
        P = self.prompt_width
        prompt_real = self.attention_mask[idx, :P].bool().any(0)
        # A prompt has at least one real token, so at least one prompt column stays (P' >= 1).
        skip = int(prompt_real.long().argmax().item()) if bool(prompt_real.any()) else max(0, P - 1)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, Tensor):
                out[f.name] = v
                continue
            v = v[idx]
            if f.name in ("sequences", "attention_mask", "bottom"):
                v = v[:, skip : P + width]
            elif v.dim() == 2:
                v = v[:, :width]
            out[f.name] = v
        out["prompt_width"] = P - skip
        return Experience(**out)

    def packed(self) -> tuple[PackedGroups, Tensor | None]:
        """The rows packed without padding, each run of consecutive rows with the same prompt sharing it
        (``engine.trainers.ppo.packing``), and ``bottom`` in that layout ([1, T, H], or None)."""
        P = self.prompt_width
        prompt_len = self.attention_mask[:, :P].sum(1).tolist()
        response_len = self.response_length.tolist()
        rows = self.sequences.tolist()
        packed = pack_groups([r[P - n : P] for r, n in zip(rows, prompt_len)],
                             [r[P : P + n] for r, n in zip(rows, response_len)], device=self.sequences.device)
        return packed, (packed.from_padded(self.bottom, P) if self.bottom is not None else None)

    def to(self, device: torch.device | str) -> "Experience":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})
