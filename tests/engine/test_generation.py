"""Batched sampling: determinism, n and max_new_tokens, batch independence, truncation, and storing into a project."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import torch

from engine.generation import Cancelled, GenerationSettings, encode_prompt, generate, generate_into_project
from engine.model_errors import ModelError
from engine.models import load_model

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there, how are you doing today?"}],
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3? Explain at length."},
    ],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model(tiny_model_dir)


def texts(gens):
    return [(g.prompt_index, g.sample_index, g.text) for g in gens]


def test_settings_have_help_and_validate():
    assert all(f.metadata.get("help") for f in fields(GenerationSettings))
    for bad in (dict(n=0), dict(top_p=0.0), dict(top_p=1.5), dict(temperature=-1), dict(max_new_tokens=0)):
        with pytest.raises(ModelError):
            GenerationSettings(**bad)
    assert GenerationSettings.from_dict({"n": 3}).n == 3
    with pytest.raises(ModelError, match="unknown field"):
        GenerationSettings.from_dict({"beams": 3})


def test_same_seed_same_responses_other_seed_differs(tiny):
    s = GenerationSettings(max_new_tokens=10, n=2, seed=7)
    a = generate(tiny.model, tiny.tokenizer, CONVERSATIONS, s)
    b = generate(tiny.model, tiny.tokenizer, CONVERSATIONS, s)
    assert texts(a) == texts(b)
    c = generate(tiny.model, tiny.tokenizer, CONVERSATIONS, GenerationSettings(max_new_tokens=10, n=2, seed=8))
    assert sum(x.text != y.text for x, y in zip(a, c)) >= len(a) - 1
    # The two samples of one prompt differ from each other.
    assert all(a[2 * p].text != a[2 * p + 1].text for p in range(len(CONVERSATIONS)))


def test_respects_n_and_max_new_tokens(tiny):
    s = GenerationSettings(max_new_tokens=5, n=3, seed=1)
    gens = generate(tiny.model, tiny.tokenizer, CONVERSATIONS, s)
    assert [(g.prompt_index, g.sample_index) for g in gens] == [(p, j) for p in range(3) for j in range(3)]
    assert all(1 <= g.new_tokens <= 5 for g in gens)
    # A random tiny model almost never says end-of-sequence: the budget is what ends its responses.
    assert any(not g.finished and g.new_tokens == 5 for g in gens)


def test_batched_equals_one_at_a_time(tiny):
    batched = generate(tiny.model, tiny.tokenizer, CONVERSATIONS, GenerationSettings(max_new_tokens=12, n=2, seed=3, batch_size=6))
    single = []
    for i, conv in enumerate(CONVERSATIONS):
        for g in generate(tiny.model, tiny.tokenizer, [conv], GenerationSettings(max_new_tokens=12, n=2, seed=3, batch_size=1)):
            g.prompt_index = i
            single.append(g)
    assert texts(batched) == texts(single)
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in single]
    # Order of prompts does not change a prompt's responses either.
    reversed_ = generate(tiny.model, tiny.tokenizer, CONVERSATIONS[::-1], GenerationSettings(max_new_tokens=12, n=2, seed=3))
    assert [g.text for g in reversed_ if g.prompt_index == 2] == [g.text for g in batched if g.prompt_index == 0]


def test_greedy_matches_transformers_greedy(tiny):
    conv = CONVERSATIONS[0]
    [ours] = generate(tiny.model, tiny.tokenizer, [conv], GenerationSettings(max_new_tokens=8, n=1, temperature=0))
    enc = tiny.tokenizer.apply_chat_template(conv, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        ref = tiny.model.generate(**enc, max_new_tokens=8, do_sample=False)
    new = ref[0, enc["input_ids"].shape[1]:].tolist()
    eos = tiny.tokenizer.eos_token_id
    new = new[: new.index(eos)] if eos in new else new
    assert ours.text == tiny.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_long_conversation_loses_oldest_turns_first(tiny):
    tok = tiny.tokenizer
    conv = [{"role": "system", "content": "sys"}]
    for i in range(6):
        conv += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    conv.append({"role": "user", "content": "last question"})
    full = encode_prompt(tok, conv, 10_000)
    cut = encode_prompt(tok, conv, len(full) - 10)
    text = tok.decode(cut)
    assert len(cut) <= len(full) - 10
    assert text.startswith("<|im_start|>system\nsys") and "last question" in text
    assert "question 0" not in text and "answer 5" in text
    tiny_budget = encode_prompt(tok, [{"role": "user", "content": "x" * 500}], 20)
    assert len(tiny_budget) == 20 and tok.decode(tiny_budget).endswith("<|im_start|>assistant\n")


def test_cancel_stops_generation(tiny):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        generate(tiny.model, tiny.tokenizer, CONVERSATIONS, GenerationSettings(max_new_tokens=50, n=2, batch_size=2),
                 should_stop=should_stop)


def test_generate_into_project_stores_provenance_and_queues(tiny, tiny_model_dir: Path, project):
    pids = [project.add_prompt(conv, source="test")[0] for conv in CONVERSATIONS]
    existing, _ = project.add_response(pids[0], "An earlier answer.", origin="imported")
    settings = GenerationSettings(max_new_tokens=6, n=3, seed=11, batch_size=4)
    seen = []
    counts = generate_into_project(
        project, str(tiny_model_dir), pids, settings, loaded=tiny, compare="all", on_progress=seen.append,
    )
    assert counts["prompts"] == 3 and not counts["cancelled"]
    assert counts["responses"] + counts["duplicates"] + counts["empty"] == 9
    assert counts["tokens"] > 0 and counts["tokens_per_s"] > 0
    assert seen and seen[-1]["done"] == 3
    model_responses = [r for p in pids for r in project.responses_for(p) if r.origin == "model"]
    assert len(model_responses) == counts["responses"]
    for r in model_responses:
        assert r.model == str(tiny_model_dir) and r.adapter is None and r.seed == 11
        assert r.sampling["temperature"] == settings.temperature and r.sampling["top_p"] == settings.top_p
        assert r.sampling["top_k"] == settings.top_k and r.sampling["max_new_tokens"] == 6
        assert r.sampling["sample_index"] in (0, 1, 2) and r.sampling["finish_reason"] in ("stop", "length")
    # Pending comparisons: all pairs among each prompt's new responses, plus each new one against the old one.
    expected = 0
    for p in pids:
        k = sum(1 for r in project.responses_for(p) if r.origin == "model")
        expected += k * (k - 1) // 2 + (k if p == pids[0] else 0)
    assert counts["comparisons"] == expected == project.pending_count()
    c = project.next_pending()
    assert c is not None and c.verdict is None and c.source == "generate"
    # Running again with the same seed adds nothing new: same texts, same pairs.
    again = generate_into_project(project, str(tiny_model_dir), pids, settings, loaded=tiny, compare="all")
    assert again["responses"] == 0 and again["comparisons"] == 0
    assert project.pending_count() == expected


def test_generate_into_project_loads_model_and_adapter(tiny_model_dir: Path, project, tmp_path: Path):
    from engine.lora import LoraSettings, attach_lora

    peft_model = attach_lora(load_model(tiny_model_dir).model, LoraSettings(r=2))
    peft_model.save_pretrained(tmp_path / "adapter")
    pid, _ = project.add_prompt(CONVERSATIONS[0])
    counts = generate_into_project(
        project, str(tiny_model_dir), [pid], GenerationSettings(max_new_tokens=4, n=2, seed=5),
        adapter=tmp_path / "adapter", compare="new",
    )
    rs = project.responses_for(pid)
    assert counts["responses"] == len(rs) >= 1
    assert all(r.adapter == str(tmp_path / "adapter") for r in rs)
    with pytest.raises(ModelError, match="compare must be"):
        generate_into_project(project, str(tiny_model_dir), [pid], compare="everything")
