"""Log-probabilities through the LM head in chunks (engine.token_logprobs): the values and the gradients of a plain
log-softmax over full logits, whichever path runs (the fused gradient of a frozen head, checkpointed chunks of a
head that trains, no gradient at all), with and without a final logit soft-cap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.logits import head_transform
from engine.token_logprobs import token_logprobs


def _plain(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, softcap: float | None,
           temperature: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    z = head(hidden).float() * scale
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    return torch.log_softmax(z / temperature, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("softcap, temperature, scale", [(None, 1.0, 1.0), (3.0, 1.0, 1.0), (None, 0.7, 1.0),
                                                         (3.0, 1.3, 1.0), (None, 1.0, 0.25), (3.0, 1.0, 4.0)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("trainable", [False, True])
def test_values_and_gradients_equal_the_plain_log_softmax(softcap, temperature, scale, bias, trainable):
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=bias)
    head.requires_grad_(trainable)
    hidden = torch.randn(23, 16, requires_grad=True)
    targets = torch.randint(0, 50, (23,))
    weights = torch.randn(23)  # a loss that weighs each token differently

    got = token_logprobs(head, hidden, targets, scale=scale, softcap=softcap, temperature=temperature, chunk=5)
    (got * weights).sum().backward()
    g_hidden = hidden.grad.clone()
    g_head = [p.grad.clone() for p in head.parameters()] if trainable else []
    hidden.grad = None
    head.zero_grad()

    want = _plain(head, hidden, targets, softcap, temperature, scale)
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_hidden, hidden.grad, rtol=1e-4, atol=1e-6)
    for a, p in zip(g_head, head.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    assert float(hidden.grad.abs().sum()) > 0


def test_no_gradient_and_no_rows():
    head = nn.Linear(8, 20)
    hidden = torch.randn(7, 8)
    targets = torch.randint(0, 20, (7,))
    with torch.no_grad():
        want = _plain(head, hidden, targets, None)
    assert torch.allclose(token_logprobs(head, hidden, targets, chunk=3), want, atol=1e-6)
    assert token_logprobs(head, hidden[:0], targets[:0]).shape == (0,)


def test_the_final_transformation_comes_from_the_model_config():
    from transformers import LlamaConfig

    assert head_transform(LlamaConfig()) == {"scale": 1.0, "softcap": None}
    config = LlamaConfig()
    config.final_logit_softcapping = 30.0  # Gemma 2 and 3
    assert head_transform(config) == {"scale": 1.0, "softcap": 30.0}
    config = LlamaConfig()
    config.logit_scale, config.logits_scaling = 0.5, 4.0  # Cohere multiplies, Granite divides
    assert head_transform(config) == {"scale": 0.125, "softcap": None}


def test_with_and_without_gradient_the_values_agree_to_the_last_bit():
    """DPO counts a pair whose policy and reference log-probabilities agree exactly as a tie: the pass with a
    gradient (the policy) and the one without (the reference) must give the very same numbers on the same rows."""
    torch.manual_seed(1)
    head = nn.Linear(32, 300, bias=False).requires_grad_(False)
    hidden = torch.randn(40, 32)
    targets = torch.randint(0, 300, (40,))
    with torch.no_grad():
        reference = token_logprobs(head, hidden, targets, chunk=16)
    policy = token_logprobs(head, hidden.clone().requires_grad_(True), targets, chunk=16)
    assert policy.requires_grad and torch.equal(policy.detach(), reference)
