"""Shared frozen layers: when policy, value and reference adapt only the top layers, the bottom ones run once per
rollout row and every role's forward starts from that hidden state. The split forwards must give what the full ones
give, and a PPO step must update the adapters as it does without sharing. A critic warm-up step moves the value
only. With several responses per prompt and the rloo estimator, a rollout samples each prompt k times, the
advantages are leave-one-out, and only the policy trains."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig

from engine.generation import encode_prompt
from engine.trainers.ppo.experience_maker import ExperienceMaker
from engine.trainers.ppo.rewards import contains_rule
from engine.trainers.ppo.roles import POLICY, VALUE, PpoRoles
from engine.trainers.ppo.trainer import PpoTrainer


def _roles(tiny_model_dir, *, top_only: bool, share: bool = True) -> tuple[PpoRoles, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    top = model.config.num_hidden_layers - 1
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"],
                      layers_to_transform=[top] if top_only else None, init_lora_weights=False, lora_dropout=0.0)
    torch.manual_seed(0)
    return PpoRoles(model, lora, seed=4, share_frozen_layers=share), AutoTokenizer.from_pretrained(tiny_model_dir)


def _left_padded_batch() -> tuple[torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(3, 250, (3, 9), generator=g)
    att = torch.ones_like(seq)
    att[0, :3] = 0  # prompts of different lengths, left-padded as in rollouts
    att[1, :1] = 0
    seq[att == 0] = 0
    return seq, att, 5


def test_adapters_on_the_top_layer_share_the_ones_below(tiny_model_dir):
    roles, _ = _roles(tiny_model_dir, top_only=True)
    assert roles.shared_depth == roles.transformer.config.num_hidden_layers - 1
    seq, att, P = _left_padded_batch()
    with torch.no_grad():
        bottom = roles.bottom(seq, att)
        assert bottom is not None and bottom.shape == (*seq.shape, roles.transformer.config.hidden_size)
        full_pol, full_ent = roles.logprobs(POLICY, seq, att, P, with_entropy=True)
        split_pol, split_ent = roles.logprobs(POLICY, seq, att, P, with_entropy=True, bottom=bottom)
        assert torch.allclose(full_pol, split_pol, atol=1e-5)
        assert torch.allclose(full_ent, split_ent, atol=1e-5)
        assert torch.allclose(roles.values(seq, att, P), roles.values(seq, att, P, bottom=bottom), atol=1e-5)
        assert torch.allclose(roles.reference_logprobs(seq, att, P),
                              roles.reference_logprobs(seq, att, P, bottom=bottom), atol=1e-5)
        # The policy is not the reference (non-zero LoRA): the split forward really ran the adapted top layer.
        assert not torch.allclose(split_pol, roles.reference_logprobs(seq, att, P, bottom=bottom), atol=1e-3)
    assert len(roles.hm.backbone().layers) == roles.transformer.config.num_hidden_layers  # the cut was undone


def test_adapters_on_every_layer_share_nothing(tiny_model_dir):
    roles, _ = _roles(tiny_model_dir, top_only=False)
    assert roles.shared_depth == 0
    seq, att, _ = _left_padded_batch()
    assert roles.bottom(seq, att) is None


def test_a_ppo_step_on_shared_layers_updates_as_without_them(tiny_model_dir):
    results = []
    for share in (True, False):
        roles, tok = _roles(tiny_model_dir, top_only=True, share=share)
        assert bool(roles.shared_depth) == share
        maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=6, forward_batch_size=2)
        opt = torch.optim.AdamW([{"params": roles.parameters_of(POLICY)}, {"params": roles.parameters_of(VALUE)}],
                                lr=1e-2)
        trainer = PpoTrainer(roles, opt, ppo_epochs=2, mini_batch_size=4, micro_batch_size=2, backward_rows=1)
        convs = [[{"role": "user", "content": "Hi" + " there" * i}] for i in range(4)]
        ids = [encode_prompt(tok, c, 32) for c in convs]
        exp, _ = maker.make(ids, convs, 0.1, torch.Generator().manual_seed(0))
        assert (exp.bottom is not None) == share
        stats = trainer.step(exp, torch.Generator().manual_seed(1))
        params = {n: p.detach().clone() for n, p in roles.hm.named_parameters() if "lora_" in n or "heads." in n}
        results.append((exp, stats, params))
    (e1, s1, p1), (e2, s2, p2) = results
    assert torch.equal(e1.sequences, e2.sequences)
    assert torch.allclose(e1.logprobs, e2.logprobs, atol=1e-5)
    assert torch.allclose(e1.values, e2.values, atol=1e-5)
    assert abs(s1["ppo/policy_loss"] - s2["ppo/policy_loss"]) < 1e-4
    assert p1.keys() == p2.keys()
    for name in p1:
        assert torch.allclose(p1[name], p2[name], atol=1e-4), name


def test_a_critic_warm_up_step_trains_the_value_only(tiny_model_dir):
    roles, tok = _roles(tiny_model_dir, top_only=True)
    maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=6, forward_batch_size=2)
    opt = torch.optim.AdamW([{"params": roles.parameters_of(POLICY)}, {"params": roles.parameters_of(VALUE)}], lr=1e-2,
                            weight_decay=0.1)
    trainer = PpoTrainer(roles, opt, ppo_epochs=2, mini_batch_size=4, micro_batch_size=2)
    convs = [[{"role": "user", "content": "Hi" + " there" * i}] for i in range(4)]
    exp, _ = maker.make([encode_prompt(tok, c, 32) for c in convs], convs, 0.1, torch.Generator().manual_seed(0))
    policy = [p.detach().clone() for p in roles.parameters_of(POLICY)]
    value = [p.detach().clone() for p in roles.parameters_of(VALUE)]
    trainer.step(exp, torch.Generator().manual_seed(1), train_policy=False)
    assert all(torch.equal(a, b) for a, b in zip(policy, roles.parameters_of(POLICY)))
    assert all(not torch.equal(a, b) for a, b in zip(value, roles.parameters_of(VALUE)))
    trainer.step(exp, torch.Generator().manual_seed(1))
    assert all(not torch.equal(a, b) for a, b in zip(policy, roles.parameters_of(POLICY)))


def test_rloo_rollout_samples_each_prompt_k_times_and_trains_the_policy_only(tiny_model_dir):
    roles, tok = _roles(tiny_model_dir, top_only=True)
    maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=6, forward_batch_size=4,
                            samples_per_prompt=3, advantage_estimator="rloo", normalize_reward=False,
                            missing_eos_penalty=0.5)
    convs = [[{"role": "user", "content": "Hi" + " there" * i}] for i in range(2)]
    ids = [encode_prompt(tok, c, 32) for c in convs]
    beta = 0.1
    exp, texts = maker.make(ids, convs, beta, torch.Generator().manual_seed(0))
    assert exp.batch_size == len(texts) == 6
    assert exp.prompt_index.tolist() == [0, 0, 0, 1, 1, 1]
    # the three copies of a prompt carry the same prompt tokens, and sampling gave them their own responses
    P = exp.prompt_width
    assert torch.equal(exp.sequences[0, :P], exp.sequences[2, :P])
    assert not torch.equal(exp.sequences[0, :P], exp.sequences[3, :P])
    assert len({tuple(r) for r in exp.sequences[:, P:].tolist()}) > 1
    # each row's advantage is its KL-penalised reward minus the mean of the other two rows of its prompt, on
    # every response token; no value was computed
    seq_reward = exp.reward - beta * exp.kl
    for row in range(6):
        others = [r for r in range(6) if r != row and exp.prompt_index[r] == exp.prompt_index[row]]
        expected = float(seq_reward[row] - seq_reward[others].mean())
        n = int(exp.response_mask[row].sum())
        assert torch.allclose(exp.advantages[row, :n], torch.full((n,), expected), atol=1e-6), row
        assert not exp.advantages[row, n:].any()
    assert not exp.values.any()

    opt = torch.optim.AdamW([{"params": roles.parameters_of(POLICY)}, {"params": roles.parameters_of(VALUE)}], lr=1e-2,
                            weight_decay=0.1)
    trainer = PpoTrainer(roles, opt, ppo_epochs=2, mini_batch_size=6, micro_batch_size=3, train_value=False)
    policy = [p.detach().clone() for p in roles.parameters_of(POLICY)]
    value = [p.detach().clone() for p in roles.parameters_of(VALUE)]
    stats = trainer.step(exp, torch.Generator().manual_seed(1))
    assert all(not torch.equal(a, b) for a, b in zip(policy, roles.parameters_of(POLICY)))
    # weight decay would move a value parameter that merely sat in the optimizer: the value got no gradient at all
    assert all(torch.equal(a, b) for a, b in zip(value, roles.parameters_of(VALUE)))
    assert "ppo/policy_loss" in stats and "ppo/value_loss" not in stats and "ppo/explained_variance" not in stats


def test_grpo_rollout_centres_and_scales_each_prompts_rewards(tiny_model_dir):
    roles, tok = _roles(tiny_model_dir, top_only=True)
    maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=6, forward_batch_size=4,
                            samples_per_prompt=3, advantage_estimator="grpo", normalize_reward=False,
                            missing_eos_penalty=0.5)
    convs = [[{"role": "user", "content": "Hi" + " there" * i}] for i in range(2)]
    beta = 0.1
    exp, _ = maker.make([encode_prompt(tok, c, 32) for c in convs], convs, beta, torch.Generator().manual_seed(0))
    # each row's advantage: (its KL-penalised reward − its prompt's mean) / (the prompt's Bessel std + 1e-4)
    seq_reward = (exp.reward - beta * exp.kl).double()
    for row in range(6):
        group = seq_reward[exp.prompt_index == exp.prompt_index[row]]
        expected = float((seq_reward[row] - group.mean()) / (group.std(unbiased=True) + 1e-4))
        n = int(exp.response_mask[row].sum())
        assert torch.allclose(exp.advantages[row, :n].double(), torch.full((n,), expected, dtype=torch.float64),
                              atol=1e-5), row
        assert not exp.advantages[row, n:].any()
    assert not exp.values.any()


def test_rloo_needs_two_responses_per_prompt(tiny_model_dir):
    roles, tok = _roles(tiny_model_dir, top_only=True)
    with pytest.raises(ValueError, match="two responses per prompt"):
        ExperienceMaker(roles, tok, contains_rule("e"), samples_per_prompt=1, advantage_estimator="rloo")
