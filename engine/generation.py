"""Batched sampling of chat responses, and storing them in a project as responses with provenance plus pending
comparisons (the annotation queue).

Sampling (temperature, top-k, top-p) is done by our own logits processor inside transformers' ``generate``, with
one random generator per output row seeded from (seed, prompt, sample index). So a response depends only on its
prompt, the settings and its sample index, not on which other prompts shared its batch or in what order they
came: the ``seed`` stored with a response, with its ``sample_index``, reproduces it (up to floating-point ties).

Rows are sorted by prompt length before batching, so a batch pads little; prompts are left-padded; the chat
template comes from the tokenizer. A conversation longer than ``max_prompt_tokens`` loses its oldest turns first
(a system message is kept), and only a single over-long turn is cut, from its start.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from workbench.messages import canonical_json

from .model_errors import ModelError

Messages = list[dict[str, str]]


@dataclass
class GenerationSettings:
    """How responses are sampled (nucleus sampling); the defaults suit small chat models."""

    max_new_tokens: int = field(default=256, metadata={"help": "Longest response, in tokens; longer ones are cut."})
    temperature: float = field(
        default=0.8, metadata={"help": "Randomness: 0 always takes the likeliest token; 1 samples the model as is."}
    )
    top_p: float = field(
        default=0.95, metadata={"help": "Nucleus sampling: sample only from the likeliest tokens whose probabilities "
                                        "add up to this (1 turns it off)."}
    )
    top_k: int = field(default=50, metadata={"help": "Sample only from the k likeliest tokens (0 turns it off)."})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "Above 1 discourages repeating tokens already in the text (1 turns it off)."}
    )
    n: int = field(default=2, metadata={"help": "Responses sampled per prompt."})
    seed: int = field(default=0, metadata={"help": "Random seed: the same seed, prompt and settings give the same responses."})
    batch_size: int = field(default=8, metadata={"help": "Sequences generated together (more is faster, up to memory)."})
    max_prompt_tokens: int = field(
        default=1536, metadata={"help": "Longest prompt, in tokens; longer conversations lose their oldest turns first."}
    )

    def __post_init__(self) -> None:
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must not be negative"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must not be negative"),
            (self.repetition_penalty > 0, "repetition_penalty must be positive"),
            (self.n >= 1, "n must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.max_prompt_tokens >= 8, "max_prompt_tokens must be at least 8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ModelError(f"generation settings: {message}")

    def sampling(self) -> dict[str, Any]:
        """What is stored with each response as its sampling parameters."""
        return {
            "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty, "n": self.n,
            "max_prompt_tokens": self.max_prompt_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"generation settings: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class Generation:
    """One sampled response."""

    prompt_index: int      # position of its prompt in the list given
    sample_index: int      # 0 .. n-1
    text: str
    prompt_tokens: int     # after any truncation
    new_tokens: int        # generated tokens, the end-of-sequence token included, padding not
    finished: bool         # True: the model ended it; False: cut at max_new_tokens
    seed: int              # the row's own seed (derived from settings.seed, the prompt and sample_index)
    token_ids: list[int] = field(default_factory=list)  # the generated ids, end-of-sequence included, no padding


@dataclass
class GenerationStats:
    sequences: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


class Cancelled(Exception):
    """Raised when ``should_stop`` asked generation to stop; the batches finished before it are kept."""


# ---------------------------------------------------------------------------------------------- sampling
def row_seed(seed: int, messages: Messages, sample_index: int) -> int:
    """The seed of one output row: a function of the run's seed, the prompt's content and the sample index only."""
    digest = hashlib.sha256(canonical_json([seed, messages, sample_index]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


class _RowSampler:
    """Temperature, top-k and top-p, then one draw per row from that row's own generator (inverse CDF).

    It runs last in ``generate``'s logits processors with ``do_sample=False`` and returns logits that are -inf
    everywhere except the drawn token, so greedy selection picks exactly the draw.
    """

    def __init__(self, settings: GenerationSettings, seeds: Sequence[int], device: torch.device):
        from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

        self.temperature = settings.temperature
        self.warpers = []
        if settings.top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k=settings.top_k))
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=settings.top_p))
        gen_device = device if device.type == "cuda" else torch.device("cpu")
        self.generators = [torch.Generator(device=gen_device).manual_seed(s) for s in seeds]
        self.gen_device = gen_device

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        if self.temperature == 0:
            chosen = scores.argmax(dim=-1)
        else:
            scores = scores / self.temperature
            for warper in self.warpers:
                scores = warper(input_ids, scores)
            probs = torch.softmax(scores, dim=-1)
            u = torch.cat([torch.rand(1, generator=g, device=self.gen_device) for g in self.generators]).to(probs.device)
            cdf = probs.cumsum(dim=-1)
            # u scaled by the row's total mass, so rounding in the cumulative sum never runs past the last token.
            chosen = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
            chosen = torch.minimum(chosen, torch.full_like(chosen, probs.shape[-1] - 1))
            # A token of probability 0 can only be hit through rounding: step back to the last token with mass.
            zero = probs.gather(1, chosen.unsqueeze(-1)).squeeze(-1) == 0
            if zero.any():
                chosen = torch.where(zero, probs.argmax(dim=-1), chosen)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.unsqueeze(-1), 0.0)
        return out


class _StopCheck:
    """Stopping criterion that ends the current batch at once when the caller asks to cancel."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop
        self.stopped = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        if self.should_stop():
            self.stopped = True
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


# ---------------------------------------------------------------------------------------------- prompts
def encode_prompt(tokenizer, messages: Messages, max_prompt_tokens: int) -> list[int]:
    """Token ids of a conversation with the generation prompt, truncated from the left by whole turns."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the model's tokenizer has no chat template, so it cannot be prompted with a conversation")
    msgs = list(messages)

    def ids_of(conv: Messages) -> list[int]:
        out = tokenizer.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    ids = ids_of(msgs)
    while len(ids) > max_prompt_tokens:
        first = 1 if msgs and msgs[0]["role"] == "system" else 0
        if len(msgs) - first <= 1:
            return ids[-max_prompt_tokens:]
        del msgs[first]
        ids = ids_of(msgs)
    return ids


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    for value in (eos, tokenizer.eos_token_id):
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v not in ids:
                ids.append(int(v))
    if not ids:
        raise ModelError("the model has no end-of-sequence token, so responses would never end")
    return ids


# ---------------------------------------------------------------------------------------------- generation
@torch.inference_mode()
def generate(
    model,
    tokenizer,
    conversations: Sequence[Messages],
    settings: GenerationSettings | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[list[Generation], GenerationStats], None] | None = None,
    stats: GenerationStats | None = None,
) -> list[Generation]:
    """Sample ``settings.n`` responses for each conversation, in batches; results in (prompt, sample) order.

    ``on_batch`` sees each finished batch (for progress and for storing results as they come);
    ``should_stop`` is polled at every token and raises Cancelled after the batches already finished.
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    settings = settings or GenerationSettings()
    stats = stats if stats is not None else GenerationStats()
    device = next(model.parameters()).device
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    encoded = [encode_prompt(tokenizer, conv, settings.max_prompt_tokens) for conv in conversations]
    rows = [(p, j) for p in range(len(conversations)) for j in range(settings.n)]
    # Longest first: a batch holds prompts of similar length (little padding), and a memory problem shows at once.
    rows.sort(key=lambda r: (-len(encoded[r[0]]), r[0], r[1]))
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=False, num_beams=1,
        repetition_penalty=settings.repetition_penalty, eos_token_id=eos_ids, pad_token_id=pad_id,
        bos_token_id=getattr(model.generation_config, "bos_token_id", None),
    )
    stop = _StopCheck(should_stop) if should_stop is not None else None
    results: list[Generation] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), settings.batch_size):
            batch = rows[start:start + settings.batch_size]
            if stop is not None and should_stop():
                raise Cancelled()
            t0 = time.perf_counter()
            width = max(len(encoded[p]) for p, _ in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (p, _) in enumerate(batch):
                ids = encoded[p]
                input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention[i, width - len(ids):] = 1
            seeds = [row_seed(settings.seed, list(conversations[p]), j) for p, j in batch]
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=config,
                logits_processor=[_RowSampler(settings, seeds, device)],
                stopping_criteria=StoppingCriteriaList([stop]) if stop is not None else None,
            )
            if stop is not None and stop.stopped:
                raise Cancelled()
            new = out[:, width:].cpu()
            produced: list[Generation] = []
            for i, (p, j) in enumerate(batch):
                tokens = new[i].tolist()
                end = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
                kept = tokens if end is None else tokens[:end]
                produced.append(Generation(
                    prompt_index=p, sample_index=j,
                    text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    prompt_tokens=len(encoded[p]),
                    new_tokens=len(tokens) if end is None else end + 1,
                    finished=end is not None, seed=seeds[i], token_ids=tokens if end is None else tokens[:end + 1],
                ))
            stats.sequences += len(produced)
            stats.new_tokens += sum(g.new_tokens for g in produced)
            stats.seconds += time.perf_counter() - t0
            results.extend(produced)
            if on_batch is not None:
                on_batch(produced, stats)
    finally:
        if was_training:
            model.train()
    results.sort(key=lambda g: (g.prompt_index, g.sample_index))
    return results


# ---------------------------------------------------------------------------------------------- into a project
def generate_into_project(
    project,
    model_ref: str,
    prompt_ids: Sequence[int],
    settings: GenerationSettings | None = None,
    *,
    adapter: str | Path | None = None,
    compare: str = "new",
    kind: str = "train",
    source: str = "generate",
    loaded=None,
    load_options: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Sample responses for the given prompts, store them with provenance (origin ``model``, model, adapter,
    sampling parameters, seed) and queue pending comparisons.

    ``compare``: ``"new"`` pairs the new responses of a prompt with each other; ``"existing"`` pairs each new
    response with the prompt's other responses; ``"all"`` does both; ``"none"`` queues nothing. Pairs already
    compared are not queued twice. Each prompt's responses and comparisons are committed together as soon as its
    batch is done, so a cancelled job keeps what it finished. ``loaded`` reuses a LoadedModel (it must be
    ``model_ref`` with ``adapter``). Returns counts: prompts, responses (new), duplicates, empty, comparisons,
    sequences, tokens, seconds, tokens_per_s, cancelled.
    """
    from .models import load_model

    if compare not in ("new", "existing", "all", "none"):
        raise ModelError(f"compare must be one of new, existing, all, none, not {compare!r}")
    settings = settings or GenerationSettings()
    prompts = [project.get_prompt(int(pid)) for pid in dict.fromkeys(prompt_ids)]
    if loaded is None:
        loaded = load_model(model_ref, adapter=adapter, **(load_options or {}))
    model_id = str(model_ref)
    adapter_s = str(adapter) if adapter is not None else None
    counts: dict[str, Any] = {
        "prompts": len(prompts), "responses": 0, "duplicates": 0, "empty": 0, "comparisons": 0,
        "sequences": 0, "tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0, "cancelled": False,
    }
    # Prompts of similar length together; whole prompts per chunk, so each chunk is stored as it finishes.
    order = sorted(range(len(prompts)), key=lambda i: -len(canonical_json(prompts[i].messages)))
    per_chunk = max(1, settings.batch_size // settings.n)
    stats = GenerationStats()
    try:
        for c in range(0, len(order), per_chunk):
            chunk = [prompts[i] for i in order[c:c + per_chunk]]
            gens = generate(
                loaded.model, loaded.tokenizer, [p.messages for p in chunk], settings,
                should_stop=should_stop, stats=stats,
            )
            with project.transaction():
                for idx, prompt in enumerate(chunk):
                    _store_prompt_results(
                        project, prompt, [g for g in gens if g.prompt_index == idx], settings, model_id, adapter_s,
                        compare, kind, source, counts,
                    )
            counts.update(sequences=stats.sequences, tokens=stats.new_tokens, seconds=round(stats.seconds, 3),
                          tokens_per_s=round(stats.tokens_per_s, 2))
            if on_progress is not None:
                on_progress({"done": min(c + per_chunk, len(order)), "total": len(order), **counts})
    except Cancelled:
        counts["cancelled"] = True
    counts.update(sequences=stats.sequences, tokens=stats.new_tokens, seconds=round(stats.seconds, 3),
                  tokens_per_s=round(stats.tokens_per_s, 2))
    return counts


def _store_prompt_results(project, prompt, gens: list[Generation], settings: GenerationSettings, model_id: str,
                          adapter: str | None, compare: str, kind: str, source: str, counts: dict[str, Any]) -> None:
    existing = [r.id for r in project.responses_for(prompt.id)]
    new_ids: list[int] = []
    for g in gens:
        if not g.text.strip():
            counts["empty"] += 1
            continue
        sampling = settings.sampling() | {
            "sample_index": g.sample_index, "row_seed": g.seed, "new_tokens": g.new_tokens,
            "finish_reason": "stop" if g.finished else "length",
        }
        rid, created = project.add_response(
            prompt.id, g.text, origin="model", source=source, model=model_id, adapter=adapter,
            sampling=sampling, seed=settings.seed,
        )
        if created:
            counts["responses"] += 1
            new_ids.append(rid)
        else:
            counts["duplicates"] += 1
    pairs: list[tuple[int, int]] = []
    if compare in ("new", "all"):
        pairs += list(itertools.combinations(new_ids, 2))
    if compare in ("existing", "all"):
        pairs += [(n, e) for n in new_ids for e in existing]
    for a, b in pairs:
        if project.find_comparison(a, b) is None:
            project.add_comparison(prompt.id, a, b, source=source, kind=kind)
            counts["comparisons"] += 1


def estimate_batches(prompts: int, settings: GenerationSettings) -> int:
    """How many generate calls a job of ``prompts`` prompts makes (for a progress bar)."""
    return math.ceil(prompts * settings.n / settings.batch_size)
