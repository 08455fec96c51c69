"""The checks an export passes before it is kept, on the project's prompts or fixed ones.

- Greedy generation: the exported model's tokens equal those of base + adapter, token for token, on every check
  prompt (both through :func:`engine.generation.generate` at temperature 0, so batching and padding are the same).
- GGUF read back through transformers: its tokenizer encodes the check prompts to the same ids with the same chat
  template, and its next-token logits stay within a fraction of the merged model's largest logit.
- A sequence classifier (reward model, safety classifier): its scores equal those of base + adapter + head.

Each check returns its figures (for the job's summary and the model card) and raises a JobError naming the first
difference when it fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..jobs import JobError

Messages = list[dict[str, str]]

# Used when the adapter belongs to no project (everyday questions of several kinds and lengths).
FIXED_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain in two sentences why the sky is blue.",
    "How do I reverse a list in Python?",
    "Give me three tips for sleeping better.",
    "What is 17 times 23?",
    "Translate 'good morning' into Spanish and German.",
    "Summarise the plot of Romeo and Juliet in one sentence.",
]
FIXED_ANSWERS = [
    "The capital of France is Paris.",
    "Red leaves drift and fall, the cold wind hums a soft song, the branches stand bare.",
    "Air scatters blue light more than red light. So the sky looks blue from every direction.",
    "Use my_list.reverse() to reverse it in place, or my_list[::-1] for a reversed copy.",
    "Keep a regular schedule, avoid screens before bed, and keep the room cool and dark.",
    "17 times 23 is 391.",
    "Spanish: buenos días. German: guten Morgen.",
    "Two young lovers from feuding families marry in secret and die through a tragic misunderstanding.",
]


def check_conversations(project_run: tuple[Path, int] | None, n: int, *, with_answers: bool) -> tuple[list[Messages], str]:
    """``n`` conversations to check on and where they come from: the project's held-out prompts first, then its
    training prompts (for a classifier, each with one of its responses), topped up with the fixed ones."""
    found: list[Messages] = []
    where = []
    if project_run is not None:
        from workbench.store import Project

        project_path, _ = project_run
        with Project.open(project_path, migrate=False) as project:
            for split in ("heldout", "train"):
                for pid in project.prompt_ids(split=split):
                    if len(found) == n:
                        break
                    messages = list(project.get_prompt(pid).messages)
                    if with_answers:
                        responses = project.responses_for(pid)
                        if not responses:
                            continue
                        messages = [*messages, {"role": "assistant", "content": responses[0].content}]
                    found.append(messages)
        if found:
            where.append(f"{len(found)} prompts of the project {project_path.name}")
    fixed = [[{"role": "user", "content": q}] + ([{"role": "assistant", "content": a}] if with_answers else [])
             for q, a in zip(FIXED_PROMPTS, FIXED_ANSWERS)]
    missing = n - len(found)
    if missing > 0:
        found += [fixed[i % len(fixed)] for i in range(missing)]
        where.append(f"{missing} fixed prompts")
    return found, " and ".join(where)


def greedy_tokens(model: Any, tokenizer: Any, conversations: Sequence[Messages], max_new_tokens: int) -> list[list[int]]:
    from ..generation import GenerationSettings, generate

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, n=1,
                                  batch_size=max(1, len(conversations)), max_prompt_tokens=1024)
    return [g.token_ids for g in generate(model, tokenizer, conversations, settings)]


def compare_greedy(reference: list[list[int]], exported: list[list[int]], what: str) -> dict[str, Any]:
    """Token-for-token equality of two sets of greedy generations; a JobError at the first difference."""
    for p, (ref, got) in enumerate(zip(reference, exported)):
        if ref != got:
            at = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
            raise JobError(f"check failed: {what} generates differently from base + adapter (prompt {p + 1}, token "
                           f"{at + 1}: {got[at:at + 1]} instead of {ref[at:at + 1]}); the export was not kept",
                           kind="check")
    return {"greedy_prompts": len(reference), "greedy_tokens": sum(len(r) for r in reference), "greedy_match": True}


def prompt_ids(tokenizer: Any, conversations: Sequence[Messages]) -> list[list[int]]:
    from ..generation import encode_prompt

    return [encode_prompt(tokenizer, c, 1024) for c in conversations]


@torch.inference_mode()
def next_token_logits(model: Any, ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """The logits after each prompt, one prompt at a time (no padding to differ between the two models)."""
    device = next(model.parameters()).device
    return [model(input_ids=torch.tensor([list(x)], device=device)).logits[0, -1].float().cpu() for x in ids]


def compare_tokenizers(ours: Any, theirs: Any, conversations: Sequence[Messages]) -> dict[str, Any]:
    """The GGUF's tokenizer, with the chat template it carries, encodes the check prompts to the same ids."""
    if (theirs.chat_template or "") != (ours.chat_template or ""):
        raise JobError("check failed: the GGUF's chat template differs from the model's; the export was not kept",
                       kind="check")
    for p, (a, b) in enumerate(zip(prompt_ids(ours, conversations), prompt_ids(theirs, conversations))):
        if a != b:
            raise JobError(f"check failed: the GGUF's tokenizer encodes check prompt {p + 1} differently ({len(b)} "
                           f"tokens instead of {len(a)}); the export was not kept", kind="check")
    return {"tokenizer_match": True}


def compare_logits(reference: list[torch.Tensor], exported: list[torch.Tensor], tolerance: float) -> dict[str, Any]:
    """Largest next-token logit difference as a fraction of the reference's largest logit, prompt by prompt."""
    worst = 0.0
    for ref, got in zip(reference, exported):
        if ref.shape != got.shape:
            raise JobError(f"check failed: the GGUF read back has {got.shape[-1]} logits instead of {ref.shape[-1]}; "
                           "the export was not kept", kind="check")
        worst = max(worst, float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-12)))
    if worst > tolerance:
        raise JobError(f"check failed: the GGUF read back gives next-token logits up to {worst:.2%} of the largest "
                       f"logit away from the merged model's (allowed {tolerance:.2%}); the export was not kept",
                       kind="check")
    return {"logit_max_diff_frac": round(worst, 6), "logit_tolerance": tolerance}


def conversation_ids(tokenizer: Any, conversations: Sequence[Messages]) -> list[list[int]]:
    """Whole conversations (the answer included) as the reward model and safety classifier read them."""
    texts = [tokenizer.apply_chat_template(list(c), tokenize=False) for c in conversations]
    return [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def padded(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(list(x), dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids, mask


def compare_scores(reference: torch.Tensor, exported: torch.Tensor) -> dict[str, Any]:
    """Scores of the exported classifier against base + adapter + head: equal up to float rounding."""
    scale = max(1.0, float(reference.abs().max()))
    diff = float((reference - exported).abs().max())
    if diff > 1e-3 * scale:
        raise JobError(f"check failed: the exported classifier scores up to {diff:.4g} away from base + adapter + "
                       "head; the export was not kept", kind="check")
    return {"scored": int(reference.shape[0]), "score_max_diff": round(diff, 8)}
