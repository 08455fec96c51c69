"""The packed attention kernels on random tensors: ``packed_sdpa`` (engine.packing) and ``pair_sdpa``
(engine.pair_attention) give the outputs and gradients of plain SDPA run on each sequence alone, with grouped
query heads, and refuse boundaries that do not cover the row."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.packing import packed_sdpa
from engine.pair_attention import pair_sdpa

H, HKV, D = 4, 2, 8


def qkv(t: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, h, t, D, generator=g, dtype=torch.float64, requires_grad=True) for h in (H, HKV, HKV))


def alone(q, k, v):
    """(1, T, H, D) of causal attention over one sequence, key/value heads repeated for the query groups."""
    k, v = (x.repeat_interleave(H // HKV, dim=1) for x in (k, v))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


def grads(tensors):
    return [t.grad.clone() for t in tensors]


def test_packed_sdpa_equals_each_example_alone():
    lengths = [5, 1, 9, 3]
    cu = torch.tensor([0, 5, 6, 15, 18], dtype=torch.int32)
    q, k, v = qkv(sum(lengths))
    out, _ = packed_sdpa(None, q, k, v, None, cu_seq_lens_q=cu)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    got = grads((q, k, v))

    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    ref = torch.cat([alone(q2[:, :, s:e], k2[:, :, s:e], v2[:, :, s:e]) for s, e in zip(cu[:-1], cu[1:])], dim=1)
    (ref * w).sum().backward()
    assert torch.allclose(out, ref)
    for a, b in zip(got, grads((q2, k2, v2))):
        assert torch.allclose(a, b)


def test_packed_sdpa_refuses_boundaries_that_miss_tokens():
    q, k, v = qkv(10)
    with pytest.raises(ValueError, match="do not cover"):
        packed_sdpa(None, q, k, v, None, cu_seq_lens_q=torch.tensor([0, 4, 8], dtype=torch.int32))


def test_pair_sdpa_equals_prompt_chosen_and_prompt_rejected_alone():
    # (prompt, chosen, rejected) lengths; the second pair has no shared prompt, the third no rejected part
    shapes = [(3, 4, 2), (0, 2, 3), (2, 3, 0)]
    segments, t = [], 0
    for p, c, r in shapes:
        segments.append((t, t + p, t + p + c, t + p + c + r))
        t += p + c + r
    q, k, v = qkv(t, seed=1)
    out, _ = pair_sdpa(None, q, k, v, None, pair_segments=segments)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    got = grads((q, k, v))

    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    pieces = []
    for p0, c0, r0, end in segments:
        pieces.append(alone(q2[:, :, p0:r0], k2[:, :, p0:r0], v2[:, :, p0:r0]))
        if end > r0:
            idx = torch.cat([torch.arange(p0, c0), torch.arange(r0, end)])
            pieces.append(alone(q2[:, :, idx], k2[:, :, idx], v2[:, :, idx])[:, c0 - p0:])
    ref = torch.cat(pieces, dim=1)
    (ref * w).sum().backward()
    assert torch.allclose(out, ref)
    for a, b in zip(got, grads((q2, k2, v2))):
        assert torch.allclose(a, b)


@pytest.mark.parametrize("segments", [[(0, 2, 4, 6)], [(1, 2, 4, 8)], [(0, 2, 3, 4), (5, 6, 7, 8)]])
def test_pair_sdpa_refuses_segments_that_do_not_tile_the_row(segments):
    q, k, v = qkv(8)
    with pytest.raises(ValueError, match="do not tile"):
        pair_sdpa(None, q, k, v, None, pair_segments=segments)


# ---------------------------------------------------------------------------------------------- soft-cap and window
def eager_alone(q, k, v, softcap=None, window=None):
    """(1, T, H, D): Gemma 2's own eager attention over one sequence, under transformers' mask rule (key j visible
    to query i when j ≤ i and, with a window, j > i − window)."""
    from types import SimpleNamespace

    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    t = q.shape[2]
    i, j = torch.arange(t).unsqueeze(1), torch.arange(t).unsqueeze(0)
    allowed = (j <= i) & ((j > i - window) if window is not None else True)
    mask = torch.zeros(1, 1, t, t, dtype=q.dtype).masked_fill(~allowed, torch.finfo(q.dtype).min)
    module = SimpleNamespace(num_key_value_groups=H // HKV, head_dim=D, training=False)
    out, _ = eager_attention_forward(module, q, k, v, mask, scaling=D ** -0.5, softcap=softcap)
    return out


# softcap small enough that tanh bends the scores of these unit-variance tensors; windows shorter than the sequences
@pytest.mark.parametrize("softcap,window", [(0.7, None), (None, 3), (0.7, 4)])
def test_packed_sdpa_honours_softcap_and_sliding_window(softcap, window):
    cu = torch.tensor([0, 7, 8, 17], dtype=torch.int32)
    q, k, v = qkv(17, seed=2)
    out, _ = packed_sdpa(None, q, k, v, None, cu_seq_lens_q=cu, softcap=softcap, sliding_window=window,
                         scaling=D ** -0.5)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    got = grads((q, k, v))

    q2, k2, v2 = (x.detach().clone().requires_grad_() for x in (q, k, v))
    ref = torch.cat([eager_alone(q2[:, :, s:e], k2[:, :, s:e], v2[:, :, s:e], softcap, window)
                     for s, e in zip(cu[:-1], cu[1:])], dim=1)
    (ref * w).sum().backward()
    torch.testing.assert_close(out, ref)
    for a, b in zip(got, grads((q2, k2, v2))):
        # SDPA's masked CPU kernel accumulates its backward in blocks: equal to about 1e-7 in float64
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the same call without the model's arguments computes something else: they are not decoration
    plain, _ = packed_sdpa(None, q, k, v, None, cu_seq_lens_q=cu, scaling=D ** -0.5)
    assert not torch.allclose(plain, ref, atol=1e-4)


@pytest.mark.parametrize("softcap,window", [(0.7, None), (None, 3), (0.7, 4)])
def test_pair_sdpa_honours_softcap_and_sliding_window(softcap, window):
    shapes = [(4, 5, 3), (2, 3, 6)]
    segments, t = [], 0
    for p, c, r in shapes:
        segments.append((t, t + p, t + p + c, t + p + c + r))
        t += p + c + r
    q, k, v = qkv(t, seed=3)
    out, _ = pair_sdpa(None, q, k, v, None, pair_segments=segments, softcap=softcap, sliding_window=window,
                       scaling=D ** -0.5)
    pieces = []
    for p0, c0, r0, end in segments:
        pieces.append(eager_alone(q[:, :, p0:r0], k[:, :, p0:r0], v[:, :, p0:r0], softcap, window))
        idx = torch.cat([torch.arange(p0, c0), torch.arange(r0, end)])
        pieces.append(eager_alone(q[:, :, idx], k[:, :, idx], v[:, :, idx], softcap, window)[:, c0 - p0:])
    torch.testing.assert_close(out, torch.cat(pieces, dim=1))


@pytest.mark.parametrize("argument", [{"s_aux": torch.zeros(H)}, {"position_bias": torch.zeros(1)},
                                      {"is_causal": False}])
def test_packed_kernels_refuse_what_they_do_not_compute(argument):
    from engine.attention_spans import UnsupportedAttention

    q, k, v = qkv(6)
    with pytest.raises(UnsupportedAttention):
        packed_sdpa(None, q, k, v, None, cu_seq_lens_q=torch.tensor([0, 6], dtype=torch.int32), **argument)
    with pytest.raises(UnsupportedAttention):
        pair_sdpa(None, q, k, v, None, pair_segments=[(0, 2, 4, 6)], **argument)
