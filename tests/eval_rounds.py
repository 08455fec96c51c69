"""Helpers shared by the automatic-win-rate tests (engine, workbench, ui): an evaluation round built directly in a
project (responses with model provenance, as the generate job stores them, then the blind pairs), and a tiny reward
model (LoRA adapter + scalar head) saved the way a reward-model run saves it."""

from __future__ import annotations

from pathlib import Path

from workbench.evaluation import EvalRound, ModelRef, new_round, pair_round
from workbench.store import Project

QUESTIONS = [
    "In one line: which city is the capital of Italy?", "In one line: how many legs does an ant have?",
    "In one line: what colour is grass?", "In one line: name an even prime number.",
    "In one line: what do cows drink?", "In one line: how do you say thank you in French?",
]
# Model B answers helpfully, model A curtly: any sensible reward model (and the expert) prefers B.
ANSWERS_B = [
    "The capital of Italy is Rome.", "An ant has six legs.", "Grass is green.", "Two is the only even prime.",
    "Cows drink water.", "You say merci.",
]


def add_round(project: Project, base: str, adapter: str = "/models/tuned-adapter", n: int = len(QUESTIONS),
              judge: int = 0) -> EvalRound:
    """A round of ``n`` held-out prompts between ``base`` (A) and ``base`` + ``adapter`` (B), its pairs queued;
    the first ``judge`` pairs judged by the expert in favour of model B."""
    pids = []
    for q in QUESTIONS[:n]:
        pid, _ = project.add_prompt([{"role": "user", "content": q}], source="heldout", split="heldout")
        pids.append(pid)
    a, b = ModelRef(base, None, "parent"), ModelRef(base, adapter, "tuned")
    rnd = new_round(project, a, b, pids)
    for i, pid in enumerate(pids):
        project.add_response(pid, f"no. ({i})", origin="model", model=base)
        project.add_response(pid, ANSWERS_B[i], origin="model", model=base, adapter=adapter)
    counts = pair_round(project, rnd)
    assert counts["queued"] == n, counts
    for c in project.comparisons(source=rnd.source)[:judge]:
        b_is_a = project.get_response(c.response_a).adapter == adapter
        project.judge(c.id, "a" if b_is_a else "b", strength="clear")
    return rnd


def build_reward_model(tiny_model_dir: Path, out: Path, *, seed: int = 0) -> Path:
    """A reward model on the tiny model: adapter ``default`` with non-zero LoRA weights and a scalar head, saved with
    :meth:`HeadedModel.save_adapter` as the ``rm`` job does (its adapter_config records the base)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from engine.reward_model import HeadedModel

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    hm = HeadedModel(model)
    hm.add_adapter("default", LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    hm.save_adapter("default", out)
    return out
