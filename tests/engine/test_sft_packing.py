"""Chat encoding, the assistant-only loss mask, left truncation and padding-free packing on a tiny model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.packing import ATTN_IMPLEMENTATION, encode_chat, pack, packed_token_losses, register_packed_attention


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def tok(tiny):
    return AutoTokenizer.from_pretrained(tiny)


def test_loss_mask_covers_only_the_response(tok):
    enc = encode_chat(tok, [{"role": "user", "content": "Hi"}], "Yo", max_length=64)
    assert tok.decode(enc.ids[: enc.n_prompt]) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(enc.ids[enc.n_prompt:]) == "Yo<|im_end|>\n"
    b = pack([enc])
    # position j predicts token j + 1: the first trained prediction is made at the assistant header's last token
    assert b.target_pos.tolist() == list(range(enc.n_prompt - 1, len(enc.ids) - 1))
    assert b.target_ids.tolist() == enc.ids[enc.n_prompt:]


def test_loss_matches_hand_computed_cross_entropy(tiny, tok):
    register_packed_attention()
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    enc = encode_chat(tok, [{"role": "user", "content": "Hi"}], "Yo", max_length=64)
    losses = packed_token_losses(model, pack([enc]))
    ids = torch.tensor([enc.ids])
    ref_model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation="eager")
    logp = torch.log_softmax(ref_model(input_ids=ids).logits[0].double(), -1)
    by_hand = [-logp[j, enc.ids[j + 1]].item() for j in range(enc.n_prompt - 1, len(enc.ids) - 1)]
    assert losses.tolist() == pytest.approx(by_hand, abs=1e-5)


def test_packed_loss_equals_unpacked_per_example(tiny, tok):
    register_packed_attention()
    packed_model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    packed_model.set_attn_implementation(ATTN_IMPLEMENTATION)
    ref = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation="sdpa")
    convs = [
        ([{"role": "user", "content": "What is the capital of France?"}], "Paris."),
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two plus two?"}], "Four, of course."),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
         "A longer answer that goes on for a while to make this example the longest of the three."),
    ]
    encs = [encode_chat(tok, p, r, 256) for p, r in convs]
    packed = packed_token_losses(packed_model, pack(encs))
    separate = []
    for e in encs:
        ids = torch.tensor([e.ids])
        labels = ids.clone()
        labels[0, : e.n_prompt] = -100
        logits = ref(input_ids=ids).logits[0, :-1]
        target = labels[0, 1:]
        separate.append(F.cross_entropy(logits[target != -100], target[target != -100], reduction="none"))
    assert torch.allclose(packed, torch.cat(separate), atol=1e-5)
    # the same with transformers' own SDPA and position_ids (its packed-sequence mask) agrees too
    assert torch.allclose(packed_token_losses(ref, pack(encs)), packed, atol=1e-5)


def test_packed_gradients_equal_unpacked(tiny, tok):
    register_packed_attention()
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    encs = [encode_chat(tok, [{"role": "user", "content": q}], a, 128) for q, a in (("x y z", "one two"), ("hello", "three"))]
    model.zero_grad()
    packed_token_losses(model, pack(encs)).sum().backward()
    g_packed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for e in encs:
        packed_token_losses(model, pack([e])).sum().backward()
    for gp, p in zip(g_packed, model.parameters()):
        assert torch.allclose(gp, p.grad, atol=1e-5)


def test_long_conversation_loses_oldest_turns_never_the_response(tok):
    turns = []
    for i in range(6):
        turns += [{"role": "user", "content": f"question number {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    prompt = [{"role": "system", "content": "sys"}, *turns, {"role": "user", "content": "final question"}]
    response = "the final response"
    full = encode_chat(tok, prompt, response, 10_000)
    assert not full.truncated
    short = encode_chat(tok, prompt, response, 120)
    assert short.truncated and len(short.ids) <= 120
    text = tok.decode(short.ids)
    assert text.endswith("the final response<|im_end|>\n")
    assert "final question" in text and "sys" in text  # the system message and the last turn stay
    assert "question number 0" not in text  # the oldest exchange went first
    assert tok.decode(short.ids[short.n_prompt:]) == tok.decode(full.ids[full.n_prompt:])


def test_response_longer_than_max_length_keeps_its_start(tok):
    enc = encode_chat(tok, [{"role": "user", "content": "q"}], "word " * 200, 64)
    assert len(enc.ids) == 64 and enc.n_targets > 0 and enc.truncated
    assert tok.decode(enc.ids[enc.n_prompt:]).startswith("word word")
