"""Pair encoding for the reward model: chat template, truncation that keeps the responses, the two batch layouts."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from engine.rm_data import ChatEncoder, EncodedPair, collate_pairs, length_grouped_order


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def conversation(turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(turns):
        msgs.append({"role": "user", "content": f"Question number {i}: tell me something about topic {i}."})
        msgs.append({"role": "assistant", "content": f"Here is a fact about topic {i}, as asked."})
    msgs.append({"role": "user", "content": "And the last question?"})
    return msgs


def test_prompt_and_responses_join_into_the_templated_conversation(tok):
    enc = ChatEncoder(tok, 1024)
    msgs = conversation(1)
    pair = enc.encode(msgs, "Chosen answer.", "Rejected answer.")
    full = tok.apply_chat_template([*msgs, {"role": "assistant", "content": "Chosen answer."}], tokenize=False)
    assert tok.decode(pair.prompt_ids + pair.chosen_ids) == full
    assert tok.decode(pair.chosen_ids) == "Chosen answer.<|im_end|>\n"
    assert tok.decode(pair.rejected_ids) == "Rejected answer.<|im_end|>\n"
    assert (pair.turns_dropped, pair.prompt_cut, pair.response_cut) == (0, False, False)
    assert pair.n_tokens == 2 * len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def test_long_conversation_loses_oldest_turns_never_the_responses(tok):
    msgs = conversation(6)
    chosen, rejected = "A long and careful chosen answer " * 3, "Short."
    full_len = len(ChatEncoder(tok, 10_000).encode(msgs, chosen, rejected).prompt_ids)
    enc = ChatEncoder(tok, full_len // 2 + 60)
    pair = enc.encode(msgs, chosen, rejected)
    assert tok.decode(pair.chosen_ids).startswith(chosen) and tok.decode(pair.rejected_ids).startswith(rejected)
    assert pair.length <= enc.max_length
    prompt = tok.decode(pair.prompt_ids)
    # the system message and the last question stay; the oldest exchanges went first
    assert prompt.startswith("<|im_start|>system\nBe brief.")
    assert "And the last question?" in prompt
    assert "topic 0" not in prompt and "topic 5" in prompt
    assert pair.turns_dropped > 0 and pair.turns_dropped % 2 == 0 and not pair.prompt_cut and not pair.response_cut
    # what is left starts on a user turn after the system message
    assert prompt.split("<|im_end|>\n")[1].startswith("<|im_start|>user")
    assert enc.stats.turns_dropped == pair.turns_dropped and enc.stats.pairs == 1


def test_a_single_overlong_question_is_cut_from_the_left(tok):
    enc = ChatEncoder(tok, 64)
    pair = enc.encode([{"role": "user", "content": "blah " * 200 + "THE END?"}], "Yes.", "No.")
    assert pair.prompt_cut and not pair.response_cut and pair.turns_dropped == 0
    assert pair.length == 64
    assert tok.decode(pair.prompt_ids).endswith("THE END?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(pair.chosen_ids) == "Yes.<|im_end|>\n"


def test_a_response_longer_than_everything_keeps_its_beginning(tok):
    enc = ChatEncoder(tok, 64, min_prompt_tokens=16)
    pair = enc.encode([{"role": "user", "content": "Hi"}], "START " + "word " * 200, "No.")
    assert pair.response_cut and pair.length <= 64
    assert len(pair.chosen_ids) == 64 - 16
    assert tok.decode(pair.chosen_ids).startswith("START")
    assert tok.decode(pair.rejected_ids) == "No.<|im_end|>\n"  # the short one is untouched


def make_pair(p, c, r, margin=0.0, tie=False) -> EncodedPair:
    return EncodedPair(list(p), list(c), list(r), margin, tie)


def test_packed_layout_shares_the_prompt_and_restarts_positions():
    pairs = [make_pair([5, 6, 7], [8, 9], [10]), make_pair([11], [12, 13, 14], [15, 16], 0.5, True)]
    b = collate_pairs(pairs, 0, "packed")
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]]
    # rejected tokens continue from the end of the prompt, as if the chosen ones were not there
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2, 3, 1, 2]]
    assert b.segments == [(0, 3, 5, 6), (6, 7, 10, 12)]
    assert b.chosen_last.tolist() == [4, 9] and b.rejected_last.tolist() == [5, 11]
    assert b.margin.tolist() == [0.0, 0.5] and b.tie.tolist() == [False, True]
    assert b.n_tokens == (6 + 2 + 1) + (2 + 3 + 2)


def test_padded_layout_puts_chosen_rows_first():
    pairs = [make_pair([5, 6], [7], [8, 9]), make_pair([1], [2], [3])]
    b = collate_pairs(pairs, 0, "padded")
    assert b.input_ids.tolist() == [[5, 6, 7, 0], [1, 2, 0, 0], [5, 6, 8, 9], [1, 3, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    with pytest.raises(ValueError, match="unknown pair layout"):
        collate_pairs(pairs, 0, "shared")


def test_length_grouped_order_is_a_deterministic_permutation_of_similar_lengths():
    lengths = [i % 50 for i in range(400)]
    a = length_grouped_order(lengths, 8, seed=3)
    assert sorted(a) == list(range(400)) and a == length_grouped_order(lengths, 8, seed=3)
    assert a != length_grouped_order(lengths, 8, seed=4)
    spread = [max(lengths[i] for i in a[k:k + 8]) - min(lengths[i] for i in a[k:k + 8]) for k in range(0, 400, 8)]
    assert sum(spread) / len(spread) < 10  # random batches would spread over ~40


def test_encoder_refuses_a_tokenizer_without_chat_template(tok):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="no chat template"):
        ChatEncoder(NoTemplate(), 64)
    assert torch.is_tensor(collate_pairs([make_pair([1], [2], [3])]).input_ids)
