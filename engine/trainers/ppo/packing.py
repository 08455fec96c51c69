"""A rollout's rows packed for scoring: each prompt once, its responses after it, no padding.

A rollout with several responses per prompt holds each prompt k times, and its rows are padded to the longest
prompt and response of the rollout. Scoring them as they are (policy and reference log-probabilities, values, the
reward model) runs every prompt's tokens k times and every padding column too. Packed, a group (one prompt and its
responses) is the span ``[prompt | r1 | r2 | … | rk]`` of one row, and the ``wb_pairs`` attention
(``engine.pair_attention``) lets each response see the prompt and itself only, at the positions it would have after
the prompt alone: the hidden states are those of the padded rows (to float rounding), for a fraction of the tokens.
On SmolLM2, 8 prompts × 4 responses of up to 128 + 64 tokens: about 40 % of the padded batch's tokens.

:func:`pack_groups` builds the packed row from token-id lists; :meth:`PackedGroups.predicting_index` says which
packed position predicts each response token (for log-probabilities and values), and
:meth:`PackedGroups.to_padded` puts a packed hidden state back into the rollout's padded layout (for the
:class:`~engine.trainers.ppo.experience.Experience` the update reads). Written here because no library packs a shared
prompt with several continuations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PackedGroups:
    input_ids: Tensor  # [1, T] long
    position_ids: Tensor  # [1, T] long: each response continues its prompt's positions
    # per group, the wb_pairs format: (prompt start, prompt end = first response start, end of each response …)
    segments: list[tuple[int, ...]]
    prompt_spans: list[tuple[int, int]]  # per row: its prompt's [start, end) in the packed row
    response_spans: list[tuple[int, int]]  # per row: its response's [start, end)

    @property
    def rows(self) -> int:
        return len(self.response_spans)

    def last_index(self) -> Tensor:
        """[N]: the packed position of each row's last token (its response's, or its prompt's when empty)."""
        return torch.tensor([(r1 if r1 > r0 else p1) - 1 for (_, p1), (r0, r1) in zip(self.prompt_spans,
                                                                                       self.response_spans)])

    def predicting_index(self, width: int) -> tuple[Tensor, Tensor]:
        """(index [N, width] long, valid [N, width] bool): the packed position whose hidden state predicts response
        token ``t`` of each row (the prompt's last token for ``t = 0``, else response token ``t − 1``)."""
        index = torch.zeros((self.rows, width), dtype=torch.long)
        valid = torch.zeros((self.rows, width), dtype=torch.bool)
        for i, ((_, p1), (r0, r1)) in enumerate(zip(self.prompt_spans, self.response_spans)):
            n = min(r1 - r0, width)
            if n:
                index[i, :n] = torch.tensor([p1 - 1, *range(r0, r0 + n - 1)])
                valid[i, :n] = True
        return index, valid

    def to_padded(self, packed: Tensor, prompt_width: int, width: int) -> Tensor:
        """A packed [T, …] tensor as [N, prompt_width + width, …]: prompts right-aligned at ``prompt_width`` (left
        padding), responses after them; padding positions are zero."""
        out = packed.new_zeros((self.rows, prompt_width + width, *packed.shape[1:]))
        for i, ((p0, p1), (r0, r1)) in enumerate(zip(self.prompt_spans, self.response_spans)):
            out[i, prompt_width - (p1 - p0) : prompt_width] = packed[p0:p1]
            out[i, prompt_width : prompt_width + (r1 - r0)] = packed[r0:r1]
        return out


    def from_padded(self, padded: Tensor, prompt_width: int) -> Tensor:
        """The inverse of :meth:`to_padded`: a [N, prompt_width + width, …] tensor in the packed layout [1, T, …]
        (each group's prompt taken from its first row)."""
        out = padded.new_zeros((1, int(self.input_ids.shape[1]), *padded.shape[2:]))
        seen: set[int] = set()
        for i, ((p0, p1), (r0, r1)) in enumerate(zip(self.prompt_spans, self.response_spans)):
            if p0 not in seen:
                seen.add(p0)
                out[0, p0:p1] = padded[i, prompt_width - (p1 - p0) : prompt_width]
            out[0, r0:r1] = padded[i, prompt_width : prompt_width + (r1 - r0)]
        return out


def pack_groups(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                device: torch.device | str = "cpu") -> PackedGroups:
    """Rows (prompt ids, response ids) packed into one row; consecutive rows with the same prompt share it."""
    if len(prompts) != len(responses) or not prompts:
        raise ValueError("pack_groups needs one prompt per response, and at least one row")
    ids: list[int] = []
    pos: list[int] = []
    segments: list[tuple[int, ...]] = []
    prompt_spans: list[tuple[int, int]] = []
    response_spans: list[tuple[int, int]] = []
    current: list[int] | None = None
    for prompt, response in zip(prompts, responses):
        prompt, response = list(prompt), list(response)
        if not prompt:
            raise ValueError("a packed row needs at least one prompt token")
        if prompt != current:
            current = prompt
            p0 = len(ids)
            ids.extend(prompt)
            pos.extend(range(len(prompt)))
            segments.append((p0, len(ids)))
        start = len(ids)
        ids.extend(response)
        pos.extend(range(len(prompt), len(prompt) + len(response)))
        segments[-1] = (*segments[-1], len(ids))
        p0, p1 = segments[-1][0], segments[-1][1]
        prompt_spans.append((p0, p1))
        response_spans.append((start, len(ids)))
    return PackedGroups(
        input_ids=torch.tensor([ids], dtype=torch.long, device=device),
        position_ids=torch.tensor([pos], dtype=torch.long, device=device),
        segments=segments, prompt_spans=prompt_spans, response_spans=response_spans,
    )


def chunks_of_groups(prompts: Sequence[Sequence[int]], rows: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of about ``rows`` rows each that never split a run of rows with the same prompt."""
    out: list[tuple[int, int]] = []
    start = 0
    n = len(prompts)
    while start < n:
        stop = min(n, start + max(1, rows))
        while stop < n and list(prompts[stop]) == list(prompts[stop - 1]):
            stop += 1
        out.append((start, stop))
        start = stop
    return out
