"""Log-probabilities of given tokens from hidden states through the LM head, without keeping a [tokens, vocab]
tensor for the backward pass.

Training losses (SFT's cross-entropy, DPO's sequence log-probabilities, PPO's policy ratio) need log p(token) at
chosen positions. Computed plainly, the LM head makes [N, V] float logits and the log-softmax keeps copies of them
for the backward: with SmolLM2's 49k vocabulary, 8 conversations of a few hundred response tokens take about a
gigabyte, more than all the model's weights. :func:`token_logprobs` goes through the head ``HEAD_TOKENS`` rows at a
time and keeps, per row, only what its backward needs:

- with a frozen plain ``nn.Linear`` head (the usual case: LoRA leaves the head alone), the gradient with respect to
  the hidden state is computed in the forward pass, chunk by chunk, ``(onehot − softmax) · W`` ([N, H], the size of
  the hidden state), and the backward only scales it by the incoming gradient: no recomputation, and the head's
  matmuls are the two a plain backward would do (the "fused linear cross-entropy" of GPU kernels such as Liger's,
  which have no CPU version);
- otherwise (a head that trains, a quantised or adapted head) each chunk is checkpointed: its logits are
  recomputed in the backward pass.

``scale`` and ``softcap``: the model's final logit transformation (:func:`engine.logits.head_transform` reads them
from the config: Cohere's and Granite's scales, Gemma's ``final_logit_softcapping``), ``cap · tanh(scale · z / cap)``
applied before the softmax, its derivative in the gradient; ``temperature`` divides the (capped) logits, as PPO's
sampler does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Rows of [rows, vocab] float logits alive at once (SmolLM2: 512 × 49k × 4 bytes = 100 MB, two or three such
# buffers at a time); large enough that the head's matmul runs at full speed.
HEAD_TOKENS = 512


def _logits(z: Tensor, scale: float, softcap: float | None, temperature: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """(the logits the softmax sees: scaled, soft-capped, then divided by the temperature; the tanh of the cap or
    None)."""
    t = None
    if scale != 1.0:
        z = z * scale
    if softcap:
        t = torch.tanh(z / softcap)
        z = softcap * t
    return (z / temperature if temperature != 1.0 else z), t


class _FusedHeadLogprobs(torch.autograd.Function):
    """log p(targets) through a frozen linear head, the gradient for the hidden state made in the forward pass."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int,
                scale: float, softcap: float | None, temperature: float) -> Tensor:
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden)
        w = weight.to(hidden.dtype)
        for s in range(0, hidden.shape[0], chunk):
            h, t = hidden[s : s + chunk], targets[s : s + chunk]
            z = F.linear(h, w, None if bias is None else bias.to(w.dtype)).float()  # as the head's own forward
            logits, tanh = _logits(z, scale, softcap, temperature)
            logp = torch.log_softmax(logits, dim=-1)
            del z, logits
            out[s : s + chunk] = logp.gather(-1, t.unsqueeze(-1)).squeeze(-1)
            # d log p(t) / d logits = onehot(t) − softmax; through the temperature, / T; the soft-cap, × (1 − tanh²);
            # the scale, × scale
            dz = logp.exp_().neg_()
            dz.scatter_add_(-1, t.unsqueeze(-1), torch.ones_like(t, dtype=dz.dtype).unsqueeze(-1))
            if temperature != 1.0:
                dz.div_(temperature)
            if tanh is not None:
                dz.mul_(1 - tanh * tanh)
            if scale != 1.0:
                dz.mul_(scale)
            grad[s : s + chunk] = (dz.to(w.dtype) @ w).to(grad.dtype)
        ctx.save_for_backward(grad)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype).unsqueeze(-1), None, None, None, None, None, None, None


def _chunk_logprobs(lm_head: nn.Module, hidden: Tensor, targets: Tensor, scale: float, softcap: float | None,
                    temperature: float) -> Tensor:
    logits, _ = _logits(lm_head(hidden).float(), scale, softcap, temperature)
    # log_softmax then gather, as the fused path: the two agree to the last bit on the same rows
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_logprobs(lm_head: nn.Module, hidden: Tensor, targets: Tensor, *, scale: float = 1.0,
                   softcap: float | None = None, temperature: float = 1.0, chunk: int = HEAD_TOKENS) -> Tensor:
    """log p(targets[i]) [N] (float32) from the hidden states [N, H] that predict them, through ``lm_head``, at
    ``temperature`` (the logits divided by it, after the soft-cap, as a sampler sees them)."""
    temperature = temperature if temperature not in (0.0, None) else 1.0
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or any(
        p.requires_grad for p in lm_head.parameters()))
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if not needs_grad:
        with torch.no_grad():
            return torch.cat([_chunk_logprobs(lm_head, hidden[s : s + chunk], targets[s : s + chunk], scale,
                                              softcap, temperature) for s in range(0, hidden.shape[0], chunk)])
    frozen_linear = type(lm_head) is nn.Linear and not any(p.requires_grad for p in lm_head.parameters())
    if frozen_linear:
        return _FusedHeadLogprobs.apply(hidden, lm_head.weight, lm_head.bias, targets, chunk, scale, softcap,
                                        temperature)
    from torch.utils.checkpoint import checkpoint

    parts = [checkpoint(_chunk_logprobs, lm_head, hidden[s : s + chunk], targets[s : s + chunk], scale, softcap, temperature,
                        use_reentrant=False) for s in range(0, hidden.shape[0], chunk)]
    return torch.cat(parts)
