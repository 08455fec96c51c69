"""Whether the trainers compute what a model itself computes, checked when a training run has loaded its model.

The trainers replace the model's attention through transformers' attention interface (the packed layouts:
:mod:`engine.packing`, :mod:`engine.pair_attention`) and compute logits from hidden states by hand
(:mod:`engine.logits`). That is right for a decoder whose attention goes through that interface and asks for
nothing beyond a soft-cap and a sliding window (:mod:`engine.attention_spans`), and whose logits are its output layer
plus a transformation :func:`engine.logits.output_logits` knows. Llama, Mistral, Qwen2, Qwen3, Gemma 2 and 3 and
Phi-3 are such models (tests/engine/test_families.py trains tiny ones of each against their own forward).

:func:`check_trainable` runs on the loaded model before the run freezes its data snapshot, so a refusal leaves the
project as it was; the core refuses the architectures it can tell from ``config.json`` even before a run row exists
(:mod:`workbench.model_files`). It refuses, naming the architecture, a model whose attention bypasses the
interface, then runs a probe: two short sequences packed into one row through the packed attention and the
hand-made logits must give the model's own logits for each sequence alone. It returns the line the run log shows
once: what the packed attention honours for this model, and where it leaves the fused SDPA kernel for the eager
math (an attention soft-cap).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from workbench.model_files import refusal_message

from .attention_spans import UnsupportedAttention
from .jobs import JobError
from .logits import output_logits, text_config
from .packing import register_packed_attention

# Probe sequences: long enough to cross a few positions, short enough to cost nothing on a large model.
PROBE_LENGTHS = (7, 5)


def architecture(lm: Any) -> str:
    """``Gemma2ForCausalLM (gemma2)``: how a refusal or the run log names a model."""
    return f"{type(lm).__name__} ({getattr(lm.config, 'model_type', '?')})"


def _refuse(lm: Any, why: str) -> JobError:
    return JobError(refusal_message(architecture(lm), why))


def describe_family(lm: Any) -> str:
    """One line on what the packed attention honours for ``lm``."""
    cfg = text_config(lm)
    honoured = []
    softcap = getattr(cfg, "attn_logit_softcapping", None)
    if softcap:
        honoured.append(f"its attention soft-cap {softcap:g} (the eager math per example instead of the fused SDPA "
                        "kernel: more memory per attention layer)")
    window = getattr(cfg, "sliding_window", None)
    if window:
        types = getattr(cfg, "layer_types", None)
        where = (f"on {sum(t == 'sliding_attention' for t in types)} of {len(types)} layers"
                 if types else "on every layer")
        honoured.append(f"its sliding window of {window} tokens {where}")
    final = getattr(cfg, "final_logit_softcapping", None)
    if final:
        honoured.append(f"its final logit soft-cap {final:g}")
    what = "; the packed layouts honour " + ", ".join(honoured) if honoured else ": plain causal attention"
    return f"model family {architecture(lm)}{what}"


@contextmanager
def _attention(lm: Any, implementation: str) -> Iterator[None]:
    config = lm.config
    previous = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = previous


def _packed_logits(lm: Any, sequences: list[torch.Tensor]) -> torch.Tensor:
    ids = torch.cat(sequences).unsqueeze(0)
    positions = torch.cat([torch.arange(len(s), device=ids.device) for s in sequences]).unsqueeze(0)
    bounds = torch.tensor([0, *torch.tensor([len(s) for s in sequences]).cumsum(0).tolist()], dtype=torch.int32,
                          device=ids.device)
    longest = max(len(s) for s in sequences)
    with _attention(lm, register_packed_attention()):
        hidden = lm.get_decoder()(input_ids=ids, position_ids=positions, use_cache=False, cu_seq_lens_q=bounds,
                                  cu_seq_lens_k=bounds, max_length_q=longest, max_length_k=longest).last_hidden_state
    return output_logits(lm, hidden[0])


def _own_logits(lm: Any, sequences: list[torch.Tensor]) -> torch.Tensor:
    """The model's own forward on each sequence alone, on its eager attention (its own attention code)."""
    with _attention(lm, "eager"):
        return torch.cat([lm(input_ids=s.unsqueeze(0), use_cache=False).logits[0].float() for s in sequences])


def _tolerance(lm: Any) -> float:
    dtype = next(lm.parameters()).dtype
    # half precision: every layer rounds to about 3 significant digits, and the two paths run different kernels
    return 2e-3 if dtype == torch.float32 else 6e-2


def check_trainable(model: Any) -> str:
    """Refuse (:class:`~engine.jobs.JobError`) a model the trainers would compute differently from the model itself;
    return :func:`describe_family`'s line. ``model``: the loaded causal LM, adapters on it or not."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(type(lm), "_supports_attention_backend", False):
        raise _refuse(lm, "its attention does not go through transformers' attention interface, which the packed "
                          "training layouts replace")
    if getattr(lm.config, "is_encoder_decoder", False) or not hasattr(lm, "get_decoder"):
        raise _refuse(lm, "it is not a decoder-only language model")
    vocab = int(text_config(lm).vocab_size)
    device = next(lm.parameters()).device
    gen = torch.Generator().manual_seed(0)
    sequences = [torch.randint(3, max(4, min(vocab, 1000)), (n,), generator=gen).to(device) for n in PROBE_LENGTHS]
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            try:
                ours = _packed_logits(lm, sequences)
            except UnsupportedAttention as e:
                raise _refuse(lm, str(e)) from e
            theirs = _own_logits(lm, sequences)
    finally:
        lm.train(was_training)
    scale = 1.0 + float(theirs.abs().max())
    worst = float((ours - theirs).abs().max())
    if not worst <= _tolerance(lm) * scale:
        raise _refuse(lm, f"on a probe, the trainers' packed forward gives logits up to {worst:.3g} away from the "
                          f"model's own (largest logit {scale - 1:.3g})")
    return describe_family(lm)

