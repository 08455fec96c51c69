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


def head_transform(model: Any) -> dict[str, Any]:
    """The model's final logit transformation as ``scale`` (multiplies the projection: Cohere's ``logit_scale``
    divided by Granite's ``logits_scaling``) and ``softcap`` (Gemma 2 and 3: ``c·tanh(x / c)``, or None): the
    keyword arguments of :func:`engine.token_logprobs.token_logprobs`. ``model``: a model or its config."""
    config = getattr(model, "config", model)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = 1.0
    multiplier = getattr(config, "logit_scale", None)  # Cohere
    if isinstance(multiplier, (int, float)) and not isinstance(multiplier, bool):
        scale *= float(multiplier)
    divisor = getattr(config, "logits_scaling", None)  # Granite
    if isinstance(divisor, (int, float)) and not isinstance(divisor, bool) and divisor:
        scale /= float(divisor)
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2 and 3
    return {"scale": scale, "softcap": float(cap) if cap else None}


def cap_logits(logits: torch.Tensor, config: Any) -> torch.Tensor:
    """``logits`` (float) after the model's own final transformation (none for most families)."""
    t = head_transform(config)
    if t["scale"] != 1.0:
        logits = logits * t["scale"]
    if t["softcap"]:
        logits = torch.tanh(logits / t["softcap"]) * t["softcap"]
    return logits


def output_logits(lm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits [..., vocab] of hidden states [..., H] of ``lm`` (a transformers causal LM, adapters on or
    not): the output projection, then the model's own final transformation."""
    return cap_logits(lm.get_output_embeddings()(hidden).float(), text_config(lm))
