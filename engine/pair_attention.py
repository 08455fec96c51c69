"""Attention for packed preference pairs: each pair's prompt goes through the model once, for both responses.

A batch of B pairs is packed into one row without padding: for each pair the span ``[prompt | chosen | rejected]``
(see :class:`engine.rm_data.PackedPairs`). Position ids run 0..P+C-1 over prompt and chosen, and restart at P
for the rejected tokens, so both responses sit at the positions they would have after the prompt alone. The
``wb_pairs`` attention (registered with transformers' ``AttentionInterface``) then computes, per pair and layer:

- prompt + chosen: ordinary causal attention over ``[prompt | chosen]`` (SDPA ``is_causal``, no mask built);
- rejected: queries of the rejected tokens against keys ``[prompt | rejected]`` with a lower-right causal mask,
  so a rejected token sees the whole prompt and the rejected tokens before it, never the chosen ones.

Each pair's hidden states, and so its rewards, equal those of running prompt+chosen and prompt+rejected as two
separate sequences (tests/engine/test_rm_data.py checks this against the padded layout), while the prompt's tokens
pass through the MLPs and projections once instead of twice and no padding is ever computed.

Activation: :func:`pairs_attention` temporarily switches the model's attention implementation to ``wb_pairs`` (a
field of the model config, shared by its layers), so the same base keeps serving generation and padded batches
with its usual attention outside the ``with`` block. Without the ``pair_segments`` argument the function falls
back to ordinary SDPA. With gradient checkpointing the block must span ``backward()`` as well, since the forward
is recomputed there (the trainers do this; ``tests/engine/test_reward_model.py`` checks the gradients).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

ATTN_IMPLEMENTATION = "wb_pairs"


def pair_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (1, H, T, D); key/value (1, Hkv, T, D) → output (1, T, H, D). ``pair_segments``: a list of
    (prompt start, chosen start, rejected start, end) per pair, contiguous and in order over the row."""
    segments: Sequence[tuple[int, int, int, int]] | None = kwargs.get("pair_segments")
    if segments is None or query.shape[0] != 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        kwargs.pop("pair_segments", None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    if not segments or segments[0][0] != 0 or segments[-1][3] != query.shape[2] or any(
        a[3] != b[0] for a, b in zip(segments[:-1], segments[1:])
    ):
        raise ValueError(f"pair_segments do not tile the {query.shape[2]} packed tokens")
    # torch.split into per-pair pieces ([prompt | chosen], [rejected]) rather than slicing the full row: the
    # backward of a split is one concatenation, while each full-row slice's backward builds a zeroed full-length
    # gradient and adds into it. Slices of a piece (the prompt's keys below) only touch that pair's piece.
    sizes = [n for p0, _, r0, end in segments for n in (r0 - p0, end - r0)]
    qs, ks, vs = query.split(sizes, dim=2), key.split(sizes, dim=2), value.split(sizes, dim=2)
    outs = []
    for i, (p0, c0, r0, end) in enumerate(segments):
        q_pc, k_pc, v_pc = qs[2 * i], ks[2 * i], vs[2 * i]
        outs.append(F.scaled_dot_product_attention(
            q_pc, k_pc, v_pc, is_causal=True, scale=scaling, dropout_p=dropout, enable_gqa=gqa,
        ))
        if end > r0:
            n_prompt, n_rej = c0 - p0, end - r0
            k = torch.cat([k_pc[:, :, :n_prompt], ks[2 * i + 1]], dim=2)
            v = torch.cat([v_pc[:, :, :n_prompt], vs[2 * i + 1]], dim=2)
            # lower-right causal: rejected token i sees the whole prompt and rejected tokens 0..i
            mask = torch.ones(n_rej, n_prompt + n_rej, dtype=torch.bool, device=query.device).tril(diagonal=n_prompt)
            outs.append(F.scaled_dot_product_attention(
                qs[2 * i + 1], k, v, attn_mask=mask, scale=scaling, dropout_p=dropout, enable_gqa=gqa,
            ))
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
