"""Packed rollout scoring (engine.trainers.ppo.packing): each prompt once for its responses, no padding. The packed layout is
checked on hand-made rows, and every packed forward (the shared bottom, policy and reference log-probabilities,
entropy, values, the reward model's score) against the same forward on the padded rows. The sampler encodes each
prompt once for its k responses and gives what sampling the repeated prompts gives."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig

from engine.pair_attention import pairs_attention
from engine.trainers.ppo.sampling import sample_responses
from engine.trainers.ppo.packing import chunks_of_groups, pack_groups
from engine.trainers.ppo.padding import pad_rows
from engine.trainers.ppo.rewards import AdapterScorer
from engine.trainers.ppo.roles import POLICY, REWARD, PpoRoles
from engine.reward_model import HeadedModel
from engine.rm_data import ChatEncoder
from tests.engine.sft_helpers import QUESTIONS

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_pack_groups_lays_out_each_prompt_once_with_its_responses():
    prompts = [[5, 6, 7], [5, 6, 7], [5, 6, 7], [9, 8]]
    responses = [[1, 2], [3], [4, 4, 4], [7, 7]]
    packed = pack_groups(prompts, responses)
    assert packed.input_ids.tolist() == [[5, 6, 7, 1, 2, 3, 4, 4, 4, 9, 8, 7, 7]]
    # each response continues its prompt's positions, as if it followed the prompt alone
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 3, 4, 5, 0, 1, 2, 3]]
    assert packed.segments == [(0, 3, 5, 6, 9), (9, 11, 13)]
    assert packed.prompt_spans == [(0, 3)] * 3 + [(9, 11)]
    assert packed.response_spans == [(3, 5), (5, 6), (6, 9), (11, 13)]
    assert packed.last_index().tolist() == [4, 5, 8, 12]
    index, valid = packed.predicting_index(3)
    # token 0 is predicted by the prompt's last token, token t by response token t - 1
    assert index.tolist() == [[2, 3, 0], [2, 0, 0], [2, 6, 7], [10, 11, 0]]
    assert valid.tolist() == [[True, True, False], [True, False, False], [True, True, True], [True, True, False]]
    padded = packed.to_padded(packed.input_ids[0].float(), prompt_width=3, width=3)
    assert padded.tolist() == [[5, 6, 7, 1, 2, 0], [5, 6, 7, 3, 0, 0], [5, 6, 7, 4, 4, 4], [0, 9, 8, 7, 7, 0]]
    # a chunk never splits the responses to one prompt
    assert chunks_of_groups(prompts, 2) == [(0, 3), (3, 4)]
    assert chunks_of_groups(prompts, 8) == [(0, 4)]
    with pytest.raises(ValueError):
        pack_groups([[]], [[1]])


def _roles(tiny_model_dir, *, top_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    top = model.config.num_hidden_layers - 1
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=MODULES, layers_to_transform=[top] if top_only else None,
                      init_lora_weights=False, lora_dropout=0.0)
    torch.manual_seed(0)
    return PpoRoles(model, lora, seed=4), AutoTokenizer.from_pretrained(tiny_model_dir)


def _rollout_rows():
    """Two prompts of different lengths, three responses each of different lengths, as the sampler lays them out."""
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 250, (5,), generator=g).tolist()] * 3 + [torch.randint(3, 250, (2,), generator=g).tolist()] * 3
    responses = [torch.randint(3, 250, (n,), generator=g).tolist() for n in (4, 1, 3, 2, 4, 4)]
    P, R = 5, 4
    p_ids, p_mask = pad_rows(prompts, 0, left=True)
    r_ids, r_mask = pad_rows(responses, 0)
    return prompts, responses, torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask], 1), r_mask.float(), P, R


@pytest.mark.parametrize("top_only", [True, False], ids=["shared-bottom", "no-sharing"])
def test_packed_forwards_equal_the_padded_ones(tiny_model_dir, top_only):
    roles, _ = _roles(tiny_model_dir, top_only=top_only)
    assert bool(roles.shared_depth) == top_only
    prompts, responses, seq, att, mask, P, R = _rollout_rows()
    packed = pack_groups(prompts, responses)
    targets = seq[:, P:]
    with torch.no_grad():
        bottom = roles.bottom(seq, att)
        pb = roles.packed_bottom(packed)
        lp, ent = roles.logprobs(POLICY, seq, att, P, 0.7, with_entropy=True, bottom=bottom)
        plp, pent = roles.packed_logprobs(POLICY, packed, targets, 0.7, with_entropy=True, bottom=pb)
        assert torch.allclose(plp, lp * mask, atol=1e-5) and torch.allclose(pent, ent * mask, atol=1e-5)
        ref = roles.reference_logprobs(seq, att, P, bottom=bottom)
        pref = roles.packed_logprobs(roles.reference, packed, targets, bottom=pb)[0]
        assert torch.allclose(pref, ref * mask, atol=1e-5)
        assert not torch.allclose(plp, pref, atol=1e-3)  # the policy's adapter really ran
        assert torch.allclose(roles.packed_values(packed, R, pb), roles.values(seq, att, P, bottom=bottom) * mask,
                              atol=1e-5)
        assert (pb is None) == (not top_only)
        if pb is not None:
            # back in the padded layout, the shared hidden state is the padded forward's on every real token
            again = packed.to_padded(pb[0], P, R)
            assert torch.allclose(again[att.bool()], bottom[att.bool()], atol=1e-5)
            assert not again[~att.bool()].any()
            # and the update's forward from it (zeros on padding) gives the same log-probabilities
            assert torch.allclose(roles.logprobs(POLICY, seq, att, P, 0.7, bottom=again)[0] * mask, lp * mask,
                                  atol=1e-5)


def test_the_reward_model_scores_packed_rows_like_padded_ones(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    hm = HeadedModel(model)
    hm.add_adapter("x", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
                   head=True, seed=2)
    hm.save_adapter("x", tmp_path / "rm")
    roles, tok = _roles(tiny_model_dir, top_only=True)
    roles.load_frozen(REWARD, tmp_path / "rm")
    convs = [[{"role": "user", "content": q}] for q, _ in QUESTIONS[:3] for _ in range(3)]
    texts = ["Paris.", "It is Paris, of course.", "Lyon?", "Eight legs.", "Eight.", "Six", "Blue.", "Grey", "Red!"]
    scorer = AdapterScorer(roles, REWARD, tok, 64, 4)  # chunks of whole groups: 3 rows, then 3, then 3
    packed = scorer(convs, texts)
    encoder = ChatEncoder(tok, 64)
    rows = [sum(encoder.encode_single(c, t)[:2], []) for c, t in zip(convs, texts)]
    ids, att = pad_rows(rows, tok.pad_token_id)
    with torch.no_grad():
        padded = roles.hm.score(REWARD, ids, att)[:, 0]
    assert torch.allclose(packed, padded, atol=1e-5)
    assert packed.unique().numel() == len(texts)  # every response got its own score


def test_group_attention_sees_the_prompt_and_only_its_own_response(tiny_model_dir):
    """Three responses after one prompt: each response's hidden states equal those of prompt + that response run
    alone, so no response attends to another."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompt, responses = [11, 12, 13, 14], [[20, 21, 22], [30, 31], [40, 41, 42, 43]]
    packed = pack_groups([prompt] * 3, responses)
    with torch.no_grad(), pairs_attention(model):
        hidden = model.model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False,
                             pair_segments=packed.segments).last_hidden_state[0]
    with torch.no_grad():
        for (r0, r1), response in zip(packed.response_spans, responses):
            alone = model.model(input_ids=torch.tensor([prompt + response])).last_hidden_state[0]
            assert torch.allclose(hidden[r0:r1], alone[len(prompt):], atol=1e-5)
            assert torch.allclose(hidden[:4], alone[:4], atol=1e-5)


def test_sampling_k_responses_encodes_each_prompt_once_and_matches_repeated_prompts(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [[1, 40, 41, 42], [1, 50]]
    calls = []
    hook = model.model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(kw["input_ids"].shape), with_kwargs=True)
    kwargs = dict(max_new_tokens=6, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id)
    try:
        shared = sample_responses(model, prompts, generator=torch.Generator().manual_seed(5), samples_per_prompt=3,
                                  **kwargs)
    finally:
        hook.remove()
    assert calls[0] == (1, 6)  # the prefill saw each prompt once, packed without padding
    assert all(c == (6, 1) for c in calls[1:])
    repeated = sample_responses(model, [p for p in prompts for _ in range(3)],
                                generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(shared.sequences, repeated.sequences)
    assert torch.equal(shared.attention_mask, repeated.attention_mask)
    assert len({tuple(r) for r in shared.sequences[:3, 4:].tolist()}) > 1  # three different responses, one prompt
