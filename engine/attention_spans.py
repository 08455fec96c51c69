"""Causal attention of one span of queries over its keys, computed as the model's own attention computes it: the
kernel under the packed layouts (``wb_packed`` in :mod:`engine.packing`, ``wb_pairs`` in
:mod:`engine.pair_attention`).

:func:`span_attention` takes the queries of the last ``Lq`` of ``Lk`` key positions (bottom-right aligned: query
``i`` stands at key position ``i + Lk - Lq``, so a packed example has ``Lq = Lk`` and a pair's rejected response has
the prompt's keys in front of its own). Query position ``p`` sees the keys at positions ``≤ p`` and, with a sliding
window ``W``, only those ``> p - W`` (transformers' sliding-window mask). With a soft-cap ``c`` (Gemma 2) the scaled
scores become ``c·tanh(s / c)`` before the mask and the softmax, as transformers' eager attention does it.

How: SDPA's fused kernels whenever they compute the same thing (no soft-cap, and a window that covers the span: the
common case of every family); a window shorter than the span adds a banded boolean mask; a soft-cap needs the
scores themselves, which SDPA never exposes, so the eager math runs (scores, cap, mask, softmax in float32, dropout,
weighted sum) over the span alone: its ``Lq × Lk`` matrix is that of one example, never of the packed row.

:func:`check_attention_arguments` refuses what this kernel does not compute (attention sinks, a position bias,
bidirectional attention), naming it, instead of silently leaving it out. Written by hand because transformers'
SDPA path refuses the soft-cap and its eager path takes a full-row mask, which is what packing avoids.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Arguments transformers passes to attention functions that change what attention computes and that the packed
# layouts do not implement (gpt-oss's sinks, T5-style position biases).
UNSUPPORTED_ARGUMENTS = ("s_aux", "sinks", "position_bias")


class UnsupportedAttention(ValueError):
    """The model asks its attention for something the packed layouts do not compute."""


def check_attention_arguments(kwargs: dict[str, Any]) -> None:
    """Raise :class:`UnsupportedAttention` naming an argument of the model's attention call the kernel cannot honour."""
    for name in UNSUPPORTED_ARGUMENTS:
        if kwargs.get(name) is not None:
            raise UnsupportedAttention(f"the model's attention takes {name!r}, which the packed attention does not "
                                       "compute")
    if kwargs.get("is_causal") is False:
        raise UnsupportedAttention("the model's attention is bidirectional; the packed attention is causal")


def span_mask(n_query: int, n_key: int, window: int | None, device: torch.device) -> torch.Tensor:
    """Boolean (n_query, n_key): True where bottom-right aligned query ``i`` may see key ``j`` (causal, and within
    ``window`` positions when given)."""
    q_pos = torch.arange(n_query, device=device).unsqueeze(1) + (n_key - n_query)
    k_pos = torch.arange(n_key, device=device).unsqueeze(0)
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= k_pos > q_pos - window
    return allowed


def span_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, scaling: float | None = None,
                   dropout: float = 0.0, softcap: float | None = None, sliding_window: int | None = None) -> torch.Tensor:
    """query (1, H, Lq, D); key/value (1, Hkv, Lk, D) with Lk ≥ Lq and H a multiple of Hkv → (1, H, Lq, D)."""
    n_query, n_key = query.shape[2], key.shape[2]
    gqa = query.shape[1] != key.shape[1]
    window = sliding_window if sliding_window is not None and n_key > sliding_window else None
    if softcap is None:
        if window is None and n_query == n_key:
            return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling, dropout_p=dropout,
                                                  enable_gqa=gqa)
        mask = span_mask(n_query, n_key, window, query.device)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, dropout_p=dropout,
                                              enable_gqa=gqa)
    if gqa:
        repeat = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~span_mask(n_query, n_key, window, query.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout > 0.0:
        weights = F.dropout(weights, p=dropout, training=True)
    return torch.matmul(weights, value)


def model_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """The attention a packed kernel falls back to for a call without packing information: transformers' SDPA, or
    the model's own eager attention when it soft-caps its scores (SDPA refuses a soft-cap)."""
    if kwargs.get("softcap") is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    import importlib

    eager = getattr(importlib.import_module(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise UnsupportedAttention(f"{type(module).__name__} soft-caps its attention but has no eager attention to "
                                   "fall back to")
    return eager(module, query, key, value, attention_mask, **kwargs)
