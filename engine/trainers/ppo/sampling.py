"""Sampling a rollout's responses: every prompt's k responses as one batch, with the policy's log-probability and
entropy of each sampled token.

How a rollout is sampled (:func:`sample_responses`):

1. **Prefill, packed**: the rollout's distinct prompts go through the model once, packed into one row without
   padding (the ``wb_pairs`` attention of :mod:`engine.pair_attention` keeps each prompt to itself), and the logits
   are taken only at each prompt's last token. Left-padding the prompts to the longest instead computes every
   padding position too: on 64 HH-RLHF prompts (4 a step) about 40 % of the padded prefill's rows. A model with
   sliding-window layers (Gemma 2 and 3, Mistral and others with a short window) is prefilled left-padded instead:
   its sliding layers' cache keeps only the last positions of the row, which in a packed row belong to other
   prompts (:func:`_padded_prefill`).
2. **The cache**: each layer's keys and values are cut per prompt from the packed row, left-padded to the longest
   prompt, repeated for the prompt's k responses and copied once into a buffer with room for every new token
   (``GrowingLayer``): a decode step writes one column in place, where transformers' dynamic cache copies the
   whole cache (``torch.cat``) at every step of every layer.
3. **Decode**: all k × prompts rows step together; the sampling draws from a ``torch.Generator`` the job owns and
   checkpoints (temperature, then top-k and top-p; :func:`draw`). At each step the row's log-probability of the drawn token and
   the entropy of its distribution (at the sampling temperature, before top-k/top-p, as PPO's losses see them) are
   kept: they are the old policy's figures the update compares against, so the scoring pass need not run the
   policy again. They come from the cached decode rather than a fresh forward, which agrees to float rounding
   (the PPO ratio of the first update is 1 to about 1e-5 rather than exactly).

Written here because transformers' ``generate`` neither samples from an external generator nor returns the
entropy, and would prefill every copy of a prompt.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ...pair_attention import pairs_attention
from .padding import pad_rows


@dataclass
class Sampled:
    sequences: Tensor  # [B, P + R]: prompt (left-padded to P) then response (right-padded to R)
    attention_mask: Tensor  # [B, P + R]
    response_mask: Tensor  # [B, R] float
    finished: Tensor  # [B] bool
    prompt_width: int
    logprobs: Tensor  # [B, R] float: log π(token) at the sampling temperature, 0 on padding
    entropy: Tensor  # [B, R] float: entropy of the token's distribution at that temperature, 0 on padding


def _filter(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    if top_k > 0:
        logits = TopKLogitsWarper(top_k=top_k)(None, logits)
    if top_p < 1.0:
        logits = TopPLogitsWarper(top_p=top_p)(None, logits)
    return logits


@functools.cache
def _growing_layer_class():
    """:class:`GrowingLayer`, made on first use so that importing this module does not import transformers."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A dynamic cache layer in a buffer with room for ``capacity`` positions: ``update`` writes the new keys
        and values in place and keeps ``keys``/``values`` as views of what is filled (a ``DynamicLayer`` concatenates
        the whole cache at every step instead)."""

        def __init__(self, keys: Tensor, values: Tensor, capacity: int):
            super().__init__()
            b, h, n, d = keys.shape
            self._k = keys.new_zeros((b, h, capacity, d))
            self._v = values.new_zeros((b, values.shape[1], capacity, values.shape[3]))
            self._k[:, :, :n], self._v[:, :, :n] = keys, values
            self.length, self.device, self.is_initialized = n, keys.device, True
            self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]

        def update(self, key_states: Tensor, value_states: Tensor, *_args, **_kwargs) -> tuple[Tensor, Tensor]:
            n = key_states.shape[-2]
            end = self.length + n
            if end > self._k.shape[2]:
                raise RuntimeError(f"the sampling cache holds {self._k.shape[2]} positions; {end} were asked for")
            self._k[:, :, self.length : end], self._v[:, :, self.length : end] = key_states, value_states
            self.length = end
            self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

    return GrowingLayer


def _decode_cache(model: torch.nn.Module, cache, spans: list[tuple[int, int]], width: int, repeats: int,
                  capacity: int):
    """The decode cache: per layer, the packed prefill's keys and values cut per prompt (``spans`` in the packed
    row), left-padded to ``width``, each prompt's rows repeated ``repeats`` times, in ``GrowingLayer`` buffers
    of ``capacity`` positions (every layer a plain dynamic one: :func:`_packs_its_cache`)."""
    from transformers.cache_utils import DynamicCache

    def per_row(t: Tensor) -> Tensor:
        out = t.new_zeros((len(spans), t.shape[1], width, t.shape[3]))
        for i, (s, e) in enumerate(spans):
            out[i, :, width - (e - s) :] = t[0, :, s:e]
        return out.repeat_interleave(repeats, dim=0) if repeats > 1 else out

    growing = _growing_layer_class()
    grown = DynamicCache()
    grown.layers = [growing(per_row(layer.keys), per_row(layer.values), capacity) for layer in cache.layers]
    return grown


def _prefill(model: torch.nn.Module, prompts: Sequence[Sequence[int]], device: torch.device):
    """One forward of every prompt, packed in one row: (the cache of that row, the logits [n, V] after each
    prompt's last token, the prompts' spans in the row)."""
    ids: list[int] = []
    pos: list[int] = []
    spans: list[tuple[int, int]] = []
    for p in prompts:
        s = len(ids)
        ids.extend(p)
        pos.extend(range(len(p)))
        spans.append((s, len(ids)))
    last = torch.tensor([e - 1 for _, e in spans], device=device)
    with pairs_attention(model):
        out = model(input_ids=torch.tensor([ids], device=device), position_ids=torch.tensor([pos], device=device),
                    pair_segments=[(s, s, e) for s, e in spans], use_cache=True, logits_to_keep=last)
    return out.past_key_values, out.logits[0].float(), spans


def _packs_its_cache(model: torch.nn.Module) -> bool:
    """Whether every layer of the model's decode cache keeps every position (no sliding window), so that a packed
    prefill's cache can be cut per prompt."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _padded_prefill(model: torch.nn.Module, ids: Tensor, mask: Tensor, repeats: int):
    """One forward of the prompts left-padded to the longest: (the decode cache, each row repeated ``repeats``
    times; the logits [n, V] after each prompt's last token)."""
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if repeats > 1:
        cache.batch_repeat_interleave(repeats)
    return cache, out.logits[:, -1].float()


def draw(probs: Tensor, generator: torch.Generator | None = None, uniform: Tensor | None = None) -> Tensor:
    """One token per row of ``probs`` [b, V] (rows summing to about 1): the first whose cumulative probability exceeds
    a uniform draw (``uniform`` [b] in [0, 1), else drawn from ``generator``): inverse transform sampling, where
    ``torch.multinomial`` takes about 30 times longer on a 49k vocabulary. The sums run in float64, so no token of
    positive probability is out of reach."""
    cdf = probs.double().cumsum(-1)
    if uniform is None:
        uniform = torch.rand(probs.shape[0], generator=generator, dtype=torch.float64, device=generator.device)
    u = uniform.to(cdf.device, torch.float64).unsqueeze(-1)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(probs.shape[-1] - 1).squeeze(-1)


def row_seed(seed: int, step: int, position: int, sample: int) -> int:
    """The seed of one rollout row: the run's seed, the PPO step, the prompt's position in the step's rollout and
    the sample's number among that prompt's responses (a hash, so nearby values give unrelated streams)."""
    digest = hashlib.blake2b(f"{seed}:{step}:{position}:{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def row_uniforms(seeds: Sequence[int], steps: int) -> Tensor:
    """[len(seeds), steps] float64 uniforms, row r from its own generator seeded with ``seeds[r]``: a row's draws do
    not depend on which other rows share its batch (or its process)."""
    return torch.stack([torch.rand(steps, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
                        for s in seeds])


@torch.no_grad()
def sample_responses(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    pad_id: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    samples_per_prompt: int = 1,
    row_seeds: Sequence[int] | None = None,
) -> Sampled:
    """Sample ``samples_per_prompt`` responses per prompt (token id lists) from ``model`` (a causal LM, adapter
    already active); row ``r`` answers prompt ``r // samples_per_prompt``. The draws come from ``generator``, or with
    ``row_seeds`` (one per row) from a generator per row (:func:`row_uniforms`), so that a row samples the same
    response whichever rows it is batched with. Temperature 0 is greedy (its log-probabilities and entropy are then
    those at temperature 1)."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    k = max(1, int(samples_per_prompt))
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    ids, mask = pad_rows(prompts, pad_id, left=True)
    ids, mask = ids.to(device), mask.to(device)
    if _packs_its_cache(model):
        prefill_cache, logits, spans = _prefill(model, prompts, device)
        cache = _decode_cache(model, prefill_cache, spans, width, k, width + max_new_tokens)
        del prefill_cache
    else:
        cache, logits = _padded_prefill(model, ids, mask, k)
    if k > 1:
        logits, ids, mask = (t.repeat_interleave(k, dim=0) for t in (logits, ids, mask))
    b = ids.shape[0]
    if row_seeds is not None and len(row_seeds) != b:
        raise ValueError(f"{len(row_seeds)} row seeds for {b} rows")
    if row_seeds is None and generator is None and temperature != 0:
        raise ValueError("sampling needs a generator or row seeds")
    uniforms = row_uniforms(row_seeds, max_new_tokens) if row_seeds is not None and temperature != 0 else None
    scale = temperature if temperature > 0 else 1.0
    eos = torch.tensor(list(eos_ids), device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    positions = mask.sum(1, keepdim=True) - 1
    new_tokens, new_mask, token_logprobs, entropies = [], [], [], []
    # The attention mask of prompt + every new token, filled one column a step (no concatenation per step).
    full_mask = torch.cat([mask, torch.zeros((b, max_new_tokens), dtype=mask.dtype, device=device)], dim=1)
    for step in range(max_new_tokens):
        scaled = logits / scale if scale != 1.0 else logits
        logp = torch.log_softmax(scaled, dim=-1)
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            probs = logp.exp() if top_k <= 0 and top_p >= 1.0 else torch.softmax(_filter(scaled, top_k, top_p), -1)
            token = draw(probs, generator, None if uniforms is None else uniforms[:, step])
        live = ~done
        token = torch.where(live, token, torch.full_like(token, pad_id))
        token_logprobs.append(logp.gather(-1, token.unsqueeze(-1)).squeeze(-1) * live)
        entropies.append(-(logp.exp() * logp).sum(-1) * live)
        new_tokens.append(token)
        new_mask.append(live.long())
        is_eos = torch.isin(token, eos) & live
        finished |= is_eos
        done |= is_eos
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        full_mask[:, width + step] = live.long()
        positions = positions + 1
        out = model(input_ids=token.unsqueeze(1), attention_mask=full_mask[:, : width + step + 1],
                    position_ids=positions, past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1].float()
    resp = torch.stack(new_tokens, dim=1)
    rmask = torch.stack(new_mask, dim=1)
    full_ids = torch.cat([ids, resp], dim=1)
    return Sampled(full_ids, torch.cat([mask, rmask], dim=1), rmask.float(), finished, width,
                   torch.stack(token_logprobs, dim=1), torch.stack(entropies, dim=1))
