"""Attention for packed preference pairs: each pair's prompt goes through the model once, for both responses.

A batch of B pairs is packed into one row without padding: for each pair the span ``[prompt | chosen | rejected]``
(see :class:`engine.rm_data.PackedPairs`). Position ids run 0..P+C-1 over prompt and chosen, and restart at P
for the rejected tokens, so both responses sit at the positions they would have after the prompt alone. The
``wb_pairs`` attention (registered with transformers' ``AttentionInterface``) then computes, per pair and layer:

- prompt + chosen: ordinary causal attention over ``[prompt | chosen]`` (SDPA ``is_causal``, no mask built);
- rejected: queries of the rejected tokens against keys ``[prompt | rejected]`` with a lower-right causal mask,
  so a rejected token sees the whole prompt and the rejected tokens before it, never the chosen ones.

The same works for any number of responses to one prompt (``[prompt | r1 | r2 | … | rk]``, each ``rj`` after the first
seeing the prompt and itself): PPO scores its several samples per prompt this way (``engine.trainers.ppo.packing``).

Each pair's hidden states, and so its rewards, equal those of running prompt+chosen and prompt+rejected as two
separate sequences (tests/engine/test_rm_data.py checks this against the padded layout), while the prompt's tokens
pass through the MLPs and projections once instead of twice and no padding is ever computed.

Activation: :func:`pairs_attention` temporarily switches the model's attention implementation to ``wb_pairs`` (a
field of the model config, shared by its layers), so the same base keeps serving generation and padded batches
with its usual attention outside the ``with`` block. Without the ``pair_segments`` argument the function falls
back to the model's usual attention. Each piece runs through :func:`engine.attention_spans.span_attention`, so the
model's attention soft-cap and sliding window hold (a rejected token's window reaches back into the prompt as it
would after the prompt alone). With gradient checkpointing the block must span ``backward()`` as well, since the
forward is recomputed there (the trainers do this; ``tests/engine/test_reward_model.py`` checks the gradients).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from .attention_spans import check_attention_arguments, model_attention, span_attention

ATTN_IMPLEMENTATION = "wb_pairs"


def pair_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (1, H, T, D); key/value (1, Hkv, T, D) → output (1, T, H, D). ``pair_segments``: one tuple per
    group, contiguous and in order over the row: (prompt start, first response start, further response starts …,
    end). A pair is (prompt start, chosen start, rejected start, end); a group of k responses to one prompt (PPO's
    samples per prompt) has k + 2 entries; a lone sequence (prompt start, start, end)."""
    segments: Sequence[tuple[int, ...]] | None = kwargs.pop("pair_segments", None)
    if segments is None or query.shape[0] != 1:
        return model_attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    check_attention_arguments(kwargs)
    if not segments or segments[0][0] != 0 or segments[-1][-1] != query.shape[2] or any(
        a[-1] != b[0] for a, b in zip(segments[:-1], segments[1:])
    ) or any(len(s) < 3 or list(s) != sorted(s) for s in segments):
        raise ValueError(f"pair_segments do not tile the {query.shape[2]} packed tokens")
    attend = functools.partial(span_attention, scaling=scaling, dropout=dropout, softcap=kwargs.get("softcap"),
                               sliding_window=kwargs.get("sliding_window"))
    # torch.split into per-group pieces ([prompt | first response], [second response], …) rather than slicing the
    # full row: the backward of a split is one concatenation, while each full-row slice's backward builds a zeroed
    # full-length gradient and adds into it. Slices of a piece (the prompt's keys below) only touch that piece.
    sizes = [n for s in segments for n in [s[2] - s[0]] + [b - a for a, b in zip(s[2:-1], s[3:])]]
    qs, ks, vs = query.split(sizes, dim=2), key.split(sizes, dim=2), value.split(sizes, dim=2)
    outs = []
    piece = 0
    for s in segments:
        q_pc, k_pc, v_pc = qs[piece], ks[piece], vs[piece]
        outs.append(attend(q_pc, k_pc, v_pc))
        n_prompt = s[1] - s[0]
        for j in range(1, len(s) - 2):
            if s[j + 2] == s[j + 1]:
                outs.append(qs[piece + j].new_zeros(qs[piece + j].shape))  # an empty piece: nothing to attend
                continue
            # response token i sees the whole prompt and its own response's tokens 0..i (bottom-right aligned)
            k = torch.cat([k_pc[:, :, :n_prompt], ks[piece + j]], dim=2)
            v = torch.cat([v_pc[:, :, :n_prompt], vs[piece + j]], dim=2)
            outs.append(attend(qs[piece + j], k, v))
        piece += len(s) - 2
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_pair_attention() -> str:
    """Register ``wb_pairs`` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, pair_sdpa)
    return ATTN_IMPLEMENTATION


@contextmanager
def pairs_attention(model) -> Iterator[None]:
    """Within the block, ``model`` (a transformers model, or its config holder) uses ``wb_pairs`` attention."""
    register_pair_attention()
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = ATTN_IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = previous
