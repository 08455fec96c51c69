"""Padding token-id rows into tensors (left for prompts that are continued, right otherwise)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, left: bool = False) -> tuple[Tensor, Tensor]:
    """(ids [N, W], attention mask [N, W]) with W the longest row (at least 1)."""
    width = max(1, max((len(r) for r in rows), default=1))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if not r:
            continue
        t = torch.tensor(list(r), dtype=torch.long)
        if left:
            ids[i, width - len(r):], mask[i, width - len(r):] = t, 1
        else:
            ids[i, : len(r)], mask[i, : len(r)] = t, 1
    return ids, mask
