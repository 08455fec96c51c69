"""The roles on one base: PPO steps change the policy and value adapters only — the base weights and the reference
adapter hash the same before and after — and the value adapter + head learns the returns on a toy."""

from __future__ import annotations

import hashlib

import pytest
import torch
from peft import LoraConfig

from engine.generation import encode_prompt
from engine.losses import clipped_value_loss, explained_variance
from engine.trainers.ppo.experience_maker import ExperienceMaker
from engine.trainers.ppo.rewards import contains_rule
from engine.trainers.ppo.roles import POLICY, REFERENCE, VALUE, PpoRoles
from engine.trainers.ppo.trainer import PpoTrainer


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _load(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
            AutoTokenizer.from_pretrained(tiny_model_dir))


def _digest(named: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(named):
        h.update(k.encode())
        h.update(named[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _split(roles: PpoRoles) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {"base": {}, POLICY: {}, REFERENCE: {}, VALUE: {}}
    for name, p in roles.hm.named_parameters():
        parts = name.split(".")
        owner = next((r for r in (POLICY, REFERENCE, VALUE) if r in parts), None)
        if name.startswith(f"heads.{VALUE}"):
            owner = VALUE
        groups[owner or "base"][name] = p.detach().clone()
    return groups


def _start_adapter(tiny_model_dir, path):
    from peft import get_peft_model

    model, _ = _load(tiny_model_dir)
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    peft.save_pretrained(path)
    return path


def test_ppo_steps_change_policy_and_value_only(tiny_model_dir, tmp_path):
    start = _start_adapter(tiny_model_dir, tmp_path / "sft")
    model, tok = _load(tiny_model_dir)
    roles = PpoRoles(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0),
                     policy_from=start, reference_from=start, seed=1)
    before = _split(roles)
    assert before["base"] and before[POLICY] and before[REFERENCE] and before[VALUE]
    # The policy starts as the reference: same weights, so the KL of the first rollout is 0 (to the float rounding
    # between the sampler's cached decode, where the policy's log-probabilities come from, and a full forward).
    assert _digest({k.replace(POLICY, "x"): v for k, v in before[POLICY].items()}) == \
        _digest({k.replace(REFERENCE, "x"): v for k, v in before[REFERENCE].items()})

    maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=5, forward_batch_size=4)
    opt = torch.optim.AdamW([{"params": roles.parameters_of(POLICY)}, {"params": roles.parameters_of(VALUE)}], lr=1e-2)
    trainer = PpoTrainer(roles, opt, ppo_epochs=2, mini_batch_size=4, micro_batch_size=2)
    convs = [[{"role": "user", "content": f"Hello {i}"}] for i in range(4)]
    ids = [encode_prompt(tok, c, 32) for c in convs]
    g = torch.Generator().manual_seed(0)
    exp, _ = maker.make(ids, convs, 0.1, g)
    assert torch.allclose(exp.kl, torch.zeros(4), atol=1e-4)
    for _ in range(2):
        trainer.step(exp, g)
        exp, _ = maker.make(ids, convs, 0.1, g)
    assert exp.kl.abs().sum() > 0  # the policy moved away from the reference

    after = _split(roles)
    assert _digest(after["base"]) == _digest(before["base"])
    assert _digest(after[REFERENCE]) == _digest(before[REFERENCE])
    for role in (POLICY, VALUE):
        changed = [k for k in before[role] if not torch.equal(before[role][k], after[role][k])]
        assert len(changed) == len(before[role]), f"{role}: not every weight changed"
    assert not any(p.requires_grad for n, p in roles.hm.named_parameters() if n in before["base"])


def test_reference_without_sft_is_the_bare_base(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    plain, _ = _load(tiny_model_dir)
    roles = PpoRoles(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False), seed=2)
    assert roles.reference is None
    seq = torch.tensor([[1, 30, 31, 32, 33, 34]])
    att = torch.ones_like(seq)
    ref = roles.reference_logprobs(seq, att, 3)
    logits = plain(input_ids=seq).logits[:, 2:-1].float()
    expected = torch.log_softmax(logits, -1).gather(-1, seq[:, 3:].unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(ref, expected, atol=1e-5)
    pol, _ = roles.logprobs(POLICY, seq, att, 3)
    assert not torch.allclose(pol, expected, atol=1e-3)  # the (non-zero) policy adapter is not the reference


def test_value_head_learns_the_returns_on_a_toy(tiny_model_dir):
    """Returns the state before each response token determines (how many of the tokens seen so far have an id
    above 150): the value adapter and head fit them (explained variance near 1)."""
    model, _ = _load(tiny_model_dir)
    roles = PpoRoles(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0), seed=3)
    g = torch.Generator().manual_seed(0)
    B, P, R = 16, 3, 5
    seq = torch.cat([torch.full((B, P), 1), torch.randint(3, 300, (B, R), generator=g)], dim=1)
    att = torch.ones_like(seq)
    mask = torch.ones(B, R)
    # The value of column t is read at position P−1+t, which has seen the response tokens before t.
    returns = (seq[:, P - 1 : -1] > 150).float().cumsum(1)
    opt = torch.optim.AdamW(roles.parameters_of(VALUE), lr=1e-2)
    old = roles.values(seq, att, P).detach()
    ev0 = explained_variance(old, returns, mask)
    for _ in range(150):
        v = roles.values(seq, att, P)
        loss = clipped_value_loss(v, old, returns, mask, clip_range=1e6).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    ev = explained_variance(roles.values(seq, att, P).detach(), returns, mask)
    assert ev0 < 0.2 and ev > 0.9, (ev0, ev)
