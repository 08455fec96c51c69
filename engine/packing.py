"""Chat examples as token ids, and padding-free packing of a micro-batch into one row.

- :func:`encode_chat` applies the tokenizer's chat template and returns the ids with the number of prompt tokens
  (everything before the response: the loss covers only the response, i.e. the assistant turn, and its
  end-of-turn marker). A conversation longer than ``max_length`` loses its oldest turns first, then the start of
  what is left of the prompt; the response is cut only when it alone does not fit.
- :func:`pack` concatenates examples into a single row with ``position_ids`` restarting at 0 for each example and
  ``cu_seq_lens`` marking the boundaries; no padding token is ever computed.
- The ``wb_packed`` attention (registered with transformers' ``AttentionInterface``) runs causal SDPA separately
  on each example's span, so attention never crosses examples and no L×L mask over the whole packed row is built
  or multiplied: the cost stays that of the examples on their own; the model's attention soft-cap and sliding window
  apply within each example (:mod:`engine.attention_spans`). Calls without ``cu_seq_lens_q`` fall back to the
  model's usual attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .attention_spans import check_attention_arguments, model_attention, span_attention
from .logits import head_transform
from .token_logprobs import token_logprobs

ATTN_IMPLEMENTATION = "wb_packed"


@dataclass
class Encoded:
    ids: list[int]
    n_prompt: int  # tokens before the first trained token
    truncated: bool = False

    @property
    def n_targets(self) -> int:
        return len(self.ids) - self.n_prompt


def _template(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompt_response(tokenizer, prompt: list[dict[str, str]], response: str) -> tuple[list[int], list[int]]:
    """(prompt ids incl. the assistant header, response ids incl. the end-of-turn marker) for one conversation."""
    prefix = _template(tokenizer, prompt, generation_prompt=True)
    full = _template(tokenizer, [*prompt, {"role": "assistant", "content": response}], generation_prompt=False)
    if full.startswith(prefix):
        return _tokens(tokenizer, prefix), _tokens(tokenizer, full[len(prefix):])
    # A template that renders earlier turns differently once a reply follows: split at the longest common prefix.
    full_ids, prefix_ids = _tokens(tokenizer, full), _tokens(tokenizer, prefix)
    n = 0
    while n < min(len(full_ids), len(prefix_ids)) and full_ids[n] == prefix_ids[n]:
        n += 1
    return full_ids[:n], full_ids[n:]


def _drop_oldest_turn(prompt: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The prompt without its oldest exchange (system messages stay); None when only the last user turn is left."""
    keep_head = [m for m in prompt[:1] if m["role"] == "system"]
    rest = prompt[len(keep_head):]
    if len(rest) <= 1:
        return None
    rest = rest[1:]
    # Start again on a user turn, as chat templates expect.
    while len(rest) > 1 and rest[0]["role"] != "user":
        rest = rest[1:]
    return keep_head + rest


def encode_chat(tokenizer, prompt: list[dict[str, str]], response: str, max_length: int) -> Encoded:
    """Token ids of prompt + response, left-truncated to ``max_length`` (oldest turns first, never the response)."""
    p_ids, r_ids = encode_prompt_response(tokenizer, prompt, response)
    truncated = False
    while len(p_ids) + len(r_ids) > max_length:
        shorter = _drop_oldest_turn(prompt)
        if shorter is None:
            break
        prompt, truncated = shorter, True
        p_ids, r_ids = encode_prompt_response(tokenizer, prompt, response)
    if len(p_ids) + len(r_ids) > max_length:
        truncated = True
        # Keep some prompt context (at least a quarter of the budget, or all of it when shorter) and as much of
        # the response as still fits; drop the start of the remaining prompt first.
        keep_prompt = min(len(p_ids), max(max_length - len(r_ids), max(1, max_length // 4)))
        p_ids = p_ids[len(p_ids) - keep_prompt:]
        r_ids = r_ids[: max_length - keep_prompt]
    return Encoded(p_ids + r_ids, len(p_ids), truncated)


@dataclass
class PackedBatch:
    """One packed row. Shapes: ``input_ids``/``position_ids`` (1, T); ``cu_seq_lens`` (n + 1,) int32;
    ``target_pos`` (N,) positions whose next token is trained; ``target_ids`` (N,) those next tokens."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seq_lens: torch.Tensor
    max_len: int
    target_pos: torch.Tensor
    target_ids: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.target_ids.shape[0])

    def to(self, device: torch.device | str) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.cu_seq_lens.to(device),
                           self.max_len, self.target_pos.to(device), self.target_ids.to(device))


def pack(examples: list[Encoded]) -> PackedBatch:
    ids: list[int] = []
    pos: list[int] = []
    cu = [0]
    tpos: list[int] = []
    tids: list[int] = []
    for ex in examples:
        off = len(ids)
        n = len(ex.ids)
        ids.extend(ex.ids)
        pos.extend(range(n))
        cu.append(off + n)
        # position j predicts token j + 1; train the predictions of every response token
        start = max(ex.n_prompt, 1)
        tpos.extend(range(off + start - 1, off + n - 1))
        tids.extend(ex.ids[start:])
    return PackedBatch(
        torch.tensor([ids], dtype=torch.long),
        torch.tensor([pos], dtype=torch.long),
        torch.tensor(cu, dtype=torch.int32),
        max(len(e.ids) for e in examples),
        torch.tensor(tpos, dtype=torch.long),
        torch.tensor(tids, dtype=torch.long),
    )


def packed_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Causal attention per packed example. query (1, H, T, D); key/value (1, Hkv, T, D) → output (1, T, H, D).
    The model's ``softcap`` and ``sliding_window`` hold within each example (:mod:`engine.attention_spans`)."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or attention_mask is not None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return model_attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    check_attention_arguments(kwargs)
    bounds = cu.tolist()
    lengths = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    if bounds[0] != 0 or bounds[-1] != query.shape[2]:
        raise ValueError(f"cu_seq_lens {bounds} do not cover the {query.shape[2]} packed tokens")
    softcap, window = kwargs.get("softcap"), kwargs.get("sliding_window")
    # torch.split rather than slicing: the backward of a split is one concatenation, while each slice's backward
    # builds a zeroed full-length gradient and adds into it (a large share of a step with many examples).
    outs = [
        span_attention(q, k, v, scaling=scaling, dropout=dropout, softcap=softcap, sliding_window=window)
        for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2))
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Register the ``wb_packed`` attention with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, packed_sdpa)
    return ATTN_IMPLEMENTATION


def packed_token_losses(model, batch: PackedBatch) -> torch.Tensor:
    """Cross-entropy (N,) of each trained token of a packed batch. ``model`` is a causal LM (a peft model or the
    bare transformers one) whose attention implementation is ``wb_packed``; logits are computed only at trained
    positions, which skips most of the vocabulary projection on prompt tokens, a few hundred rows at a time with no
    [N, vocab] tensor kept for the backward (``engine.token_logprobs``), and as the model computes them (its final
    logit transformation included: :func:`engine.logits.head_transform`)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = lm.get_decoder()(
        input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
        cu_seq_lens_q=batch.cu_seq_lens, cu_seq_lens_k=batch.cu_seq_lens,
        max_length_q=batch.max_len, max_length_k=batch.max_len,
    ).last_hidden_state
    h = hidden[0].index_select(0, batch.target_pos)
    return -token_logprobs(lm.get_output_embeddings(), h, batch.target_ids, **head_transform(lm))
