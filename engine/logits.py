"""Logits from hidden states, as the model's own forward computes them.

The trainers compute logits by hand, only at the positions they need (SFT's trained tokens, DPO's and PPO's
response tokens), rather than asking the model for a [B, L, vocab] tensor. transformers' causal LMs do more than
the output projection in their forward: Gemma 2 and 3 soft-cap the logits (``final_logit_softcapping``: ``c·tanh(x
/ c)``), Cohere multiplies them by ``logit_scale``, Granite divides them by ``logits_scaling``. :func:`output_logits`
applies the projection and whichever of these the model's config sets, in float32. The engine's family check
(:mod:`engine.families`) compares the result with the model's own forward when a training run loads a model, so an
architecture with yet another transformation is refused rather than trained on other logits.
"""

from __future__ import annotations

from typing import Any

import torch


def text_config(model: Any) -> Any:
    """The config of the language model (the text part of a multimodal config)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def cap_logits(logits: torch.Tensor, config: Any) -> torch.Tensor:
    """``logits`` (float) after the model's own final transformation (none for most families)."""
    scale = getattr(config, "logit_scale", None)  # Cohere
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        logits = logits * scale
    divisor = getattr(config, "logits_scaling", None)  # Granite
    if isinstance(divisor, (int, float)) and not isinstance(divisor, bool) and divisor:
        logits = logits / divisor
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2 and 3
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def output_logits(lm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits [..., vocab] of hidden states [..., H] of ``lm`` (a transformers causal LM, adapters on or
    not): the output projection, then the model's own final transformation."""
    return cap_logits(lm.get_output_embeddings()(hidden).float(), text_config(lm))
