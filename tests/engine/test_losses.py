"""The loss pieces against numbers worked out by hand (the arithmetic is written beside each expected value)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.losses import (
    AdaptiveKLController,
    FixedKLController,
    bradley_terry_loss,
    clipped_policy_loss,
    clipped_value_loss,
    dpo_loss,
    explained_variance,
    gae,
    group_normalized_advantages,
    leave_one_out_advantages,
    masked_bce_with_logits,
    pairwise_accuracy,
    strength_margin,
    whiten,
)

t = torch.tensor


def test_strength_margins_default_and_override():
    assert strength_margin("slight") == pytest.approx(1 / 3)
    assert strength_margin("clear") == pytest.approx(2 / 3)
    assert strength_margin("strong") == 1.0
    assert strength_margin(None) == 0.0
    assert strength_margin("clear", {"slight": 0.1, "clear": 0.2, "strong": 0.5, None: 0.0}) == 0.2
    # A table without the strength falls back to its "no strength" margin.
    assert strength_margin("strong", {None: 0.0}) == 0.0


def test_bradley_terry_worked_example():
    r_c = t([2.0, 0.5, 1.0, 3.0])
    r_r = t([1.0, 1.0, 1.0, 1.0])
    margin = t([0.0, 0.5, 0.7, 0.0])
    tie = t([False, False, True, True])
    # pair 1: d = 1, m = 0           -> -log σ(1)  = log(1 + e^-1)              = 0.3132617
    # pair 2: d = -0.5, m = 0.5       -> -log σ(-1) = log(1 + e)                 = 1.3132617
    # pair 3: tie, d = 0 (margin ignored) -> -½ log σ(0) - ½ log σ(0) = log 2     = 0.6931472
    # pair 4: tie, d = 2              -> ½ log(1 + e^-2) + ½ log(1 + e^2) = ½(0.1269280 + 2.1269280) = 1.1269280
    # mean = (0.3132617 + 1.3132617 + 0.6931472 + 1.1269280) / 4 = 3.4465986 / 4 = 0.8616496
    out = bradley_terry_loss(r_c, r_r, margin=margin, tie=tie)
    assert out.loss.item() == pytest.approx(0.8616496, abs=1e-6)
    # centring: (r_c + r_r)^2 = 9, 2.25, 4, 16 -> mean 7.8125; coefficient 0.01 adds 0.078125
    out = bradley_terry_loss(r_c, r_r, margin=margin, tie=tie, centring_coef=0.01)
    assert out.centring_loss.item() == pytest.approx(7.8125)
    assert out.bt_loss.item() == pytest.approx(0.8616496, abs=1e-6)
    assert out.loss.item() == pytest.approx(0.8616496 + 0.078125, abs=1e-6)


def test_bradley_terry_plain_and_weighted():
    # no margin, no tie: -log σ(1) and -log σ(-1) -> mean (0.3132617 + 1.3132617) / 2 = 0.8132617
    out = bradley_terry_loss(t([1.0, 0.0]), t([0.0, 1.0]))
    assert out.loss.item() == pytest.approx(0.8132617, abs=1e-6)
    # weights 3:1 -> (3·0.3132617 + 1.3132617) / 4 = 0.5632617
    out = bradley_terry_loss(t([1.0, 0.0]), t([0.0, 1.0]), weight=t([3.0, 1.0]))
    assert out.loss.item() == pytest.approx(0.5632617, abs=1e-6)


def test_bradley_terry_gradient_pushes_chosen_up():
    r_c = t([0.0], requires_grad=True)
    r_r = t([0.0], requires_grad=True)
    bradley_terry_loss(r_c, r_r, margin=t([1.0])).loss.backward()
    # d/dr_c of -log σ(r_c - r_r - 1) at 0 is -(1 - σ(-1)) = -σ(1) = -0.7310586
    assert r_c.grad.item() == pytest.approx(-0.7310586, abs=1e-6)
    assert r_r.grad.item() == pytest.approx(0.7310586, abs=1e-6)


def test_tie_gradient_pulls_rewards_together():
    r_c = t([2.0], requires_grad=True)
    r_r = t([0.0], requires_grad=True)
    bradley_terry_loss(r_c, r_r, tie=t([True])).loss.backward()
    # d/dd of ½ softplus(-d) + ½ softplus(d) = σ(d) - ½ = σ(2) - ½ = 0.3807971
    assert r_c.grad.item() == pytest.approx(0.3807971, abs=1e-6)


def test_pairwise_accuracy_skips_ties():
    correct, counted = pairwise_accuracy(t([1.0, 0.0, 5.0, 1.0]), t([0.0, 1.0, 0.0, 1.0]), tie=t([False, False, True, False]))
    # pair 1 right, pair 2 wrong, pair 3 a tie (not counted), pair 4 equal rewards (not strictly higher: wrong)
    assert (correct, counted) == (1, 3)


def test_masked_bce_ignores_unknown_cells():
    logits = t([[0.0, 2.0], [-1.0, 0.0]], requires_grad=True)
    labels = t([[1.0, 0.0], [0.0, 1.0]])
    known = t([[1.0, 0.0], [1.0, 1.0]])
    # (0,0): logit 0, label 1 -> log 2 = 0.6931472; (0,1) unknown; (1,0): logit -1, label 0 -> -log σ(1) = 0.3132617;
    # (1,1): log 2 = 0.6931472.  mean over 3 known cells = 1.6995561 / 3 = 0.5665187
    loss = masked_bce_with_logits(logits, labels, known)
    assert loss.item() == pytest.approx(0.5665187, abs=1e-6)
    loss.backward()
    assert logits.grad[0, 1].item() == 0.0
    assert logits.grad[0, 0].item() == pytest.approx((0.5 - 1.0) / 3, abs=1e-6)  # (σ(0) - 1) / 3
    # nothing known at all: 0, and backward still works
    empty = masked_bce_with_logits(logits, labels, torch.zeros_like(known))
    assert empty.item() == 0.0
    empty.backward()


def test_gae_worked_example():
    rewards = t([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = t([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    # row 1, γ = 1, λ = 0.5:  δ2 = 1 - 0.7 = 0.3 -> A2 = 0.3;  δ1 = 0.7 - 0.6 = 0.1 -> A1 = 0.1 + 0.5·0.3 = 0.25;
    #                          δ0 = 0.6 - 0.5 = 0.1 -> A0 = 0.1 + 0.5·0.25 = 0.225;  returns = A + V = 0.725, 0.85, 1.0
    adv, ret = gae(rewards[:1], values[:1], mask[:1], gamma=1.0, lam=0.5)
    assert adv.tolist()[0] == pytest.approx([0.225, 0.25, 0.3])
    assert ret.tolist()[0] == pytest.approx([0.725, 0.85, 1.0])
    # row 2, γ = 0.9, λ = 1, last token is padding (its reward 9 and value 9 must be ignored):
    #   δ1 = 2 + 0 - 1 = 1 -> A1 = 1;  δ0 = 0 + 0.9·1 - 1 = -0.1 -> A0 = -0.1 + 0.9·1 = 0.8;  returns 1.8, 2.0, 0
    adv, ret = gae(rewards[1:], values[1:], mask[1:], gamma=0.9, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.8, 1.0, 0.0])
    assert ret.tolist()[0] == pytest.approx([1.8, 2.0, 0.0])


def test_leave_one_out_advantages_worked_example():
    # prompt 0 has three responses rewarded 1, 2, 6: baselines (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5
    #   -> advantages -3, -1.5, 4.5; prompt 1 has two, rewarded 5 and -1: baselines -1 and 5 -> 6, -6.
    # Rows are interleaved on purpose (the group, not the position, decides), and padding stays 0.
    reward = t([1.0, 5.0, 2.0, -1.0, 6.0])
    group = torch.tensor([0, 1, 0, 1, 0])
    mask = t([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]])
    adv = leave_one_out_advantages(reward, group, mask)
    expected = [[-3.0, -3.0, 0.0], [6.0, 0.0, 0.0], [-1.5, -1.5, -1.5], [-6.0, -6.0, 0.0], [4.5, 0.0, 0.0]]
    assert torch.allclose(adv, t(expected), atol=1e-6), adv
    # each prompt's advantages sum to zero: the prompt's own level is gone
    per_row = adv[:, 0]
    assert float(per_row[group == 0].sum()) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least two responses per prompt"):
        leave_one_out_advantages(t([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]), t([[1], [1], [1]]))


def test_group_normalized_advantages_worked_example():
    # prompt 0: rewards 1, 2, 6 -> mean 3, deviations -2, -1, 3, Bessel variance (4 + 1 + 9) / 2 = 7, std √7;
    # prompt 1: rewards 5, -1 -> mean 2, deviations 3, -3, variance 18, std √18; prompt 2: 4, 4 -> all 0 (no 0/0).
    reward = t([1.0, 5.0, 2.0, -1.0, 6.0, 4.0, 4.0])
    group = torch.tensor([0, 1, 0, 1, 0, 2, 2])
    mask = t([[1, 1], [1, 0], [1, 1], [1, 1], [1, 0], [1, 1], [1, 0]])
    adv = group_normalized_advantages(reward, group, mask)
    s0, s1 = 7 ** 0.5 + 1e-4, 18 ** 0.5 + 1e-4
    expected = [[-2 / s0, -2 / s0], [3 / s1, 0.0], [-1 / s0, -1 / s0], [-3 / s1, -3 / s1], [3 / s0, 0.0],
                [0.0, 0.0], [0.0, 0.0]]
    assert torch.allclose(adv, t(expected), atol=1e-6), adv
    assert adv[0, 0].item() == pytest.approx(-0.755901, abs=1e-5)
    # a shift or a positive scale of every reward of a group changes nothing (up to the eps)
    shifted = group_normalized_advantages(3.0 * reward + 10.0, group, mask)
    assert torch.allclose(shifted, adv, atol=1e-4)
    with pytest.raises(ValueError, match="at least two responses per prompt"):
        group_normalized_advantages(t([1.0, 2.0, 3.0]), torch.tensor([0, 0, 1]), t([[1], [1], [1]]))


def test_whiten_over_mask():
    # mean of 1, 2, 3 is 2; unbiased variance ((1 + 0 + 1) / 2) = 1 -> -1, 0, 1; padding stays 0
    out = whiten(t([1.0, 2.0, 3.0, 100.0]), t([1, 1, 1, 0]))
    assert out.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)


def test_clipped_policy_loss_worked_example():
    logprobs = torch.log(t([[1.5, 0.5, 1.1, 7.0]]))
    old = torch.zeros(1, 4)
    adv = t([[1.0, 1.0, -2.0, 5.0]])
    mask = t([[1, 1, 1, 0]])
    # ε = 0.2, ratios 1.5, 0.5, 1.1 (4th token is padding):
    #   tok 1: A = 1:  -1.5 vs -1.2 (clipped)  -> max = -1.2 (clipped branch)
    #   tok 2: A = 1:  -0.5 vs -0.8            -> -0.5
    #   tok 3: A = -2: 2.2 vs 2.2              -> 2.2
    #   loss = (-1.2 - 0.5 + 2.2) / 3 = 0.1666667, clip fraction 1/3
    #   approx KL = ½·mean(ln²1.5, ln²0.5, ln²1.1) = ½·(0.1644019 + 0.4804530 + 0.0090840)/3 = 0.1089898
    out = clipped_policy_loss(logprobs, old, adv, mask, clip_eps=0.2)
    assert out.loss.item() == pytest.approx(0.1666667, abs=1e-6)
    assert out.clip_frac.item() == pytest.approx(1 / 3)
    assert out.approx_kl.item() == pytest.approx(0.1089898, abs=1e-6)


def test_clipped_value_loss_worked_example():
    values = t([[1.0, 3.0, 50.0]])
    old = t([[0.5, 2.0, 0.0]])
    returns = t([[0.0, 3.0, 0.0]])
    mask = t([[1, 1, 0]])
    # c = 0.2. tok 1: V_clip = 0.5 + 0.2 = 0.7; errors 1.0 vs 0.49 -> 1.0 (unclipped larger)
    #          tok 2: V_clip = 2.0 + 0.2 = 2.2; errors 0.0 vs 0.64 -> 0.64 (clipped larger)
    #          loss = ½·(1.0 + 0.64)/2 = 0.41, clip fraction ½
    out = clipped_value_loss(values, old, returns, mask, clip_range=0.2)
    assert out.loss.item() == pytest.approx(0.41, abs=1e-6)
    assert out.clip_frac.item() == pytest.approx(0.5)


def test_explained_variance():
    mask = t([1, 1, 1, 1])
    returns = t([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), returns, mask) == pytest.approx(0.0)


def test_adaptive_kl_controller():
    kl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    # KL 9 vs target 6: error 0.5, clipped to 0.2 -> β = 0.1·(1 + 0.2·256/10000) = 0.100512
    kl.update(9.0, 256)
    assert kl.value == pytest.approx(0.100512)
    # KL 5.4: error -0.1 -> β = 0.100512·(1 - 0.1·1000/10000) = 0.100512·0.99 = 0.09950688
    kl.update(5.4, 1000)
    assert kl.value == pytest.approx(0.09950688)
    state = kl.state_dict()
    other = AdaptiveKLController(1.0, 1.0, 1.0)
    other.load_state_dict(state)
    assert other.value == kl.value and other.target == 6.0
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, 0.0, 100)


def test_adaptive_kl_controller_floor():
    # KL 0 vs target 4: error -1, clipped to -0.2; n/horizon = 32/100, so β shrinks by 6.4 % a step:
    # 0.1 -> 0.0936 -> 0.0876 (under the floor 0.09, so 0.09); KL 8: error +0.2 -> 0.09 · 1.064 = 0.09576
    kl = AdaptiveKLController(0.1, 4.0, 100, floor=0.09)
    kl.update(0.0, 32)
    assert kl.value == pytest.approx(0.0936)
    kl.update(0.0, 32)
    assert kl.value == pytest.approx(0.09)
    kl.update(8.0, 32)
    assert kl.value == pytest.approx(0.09576)
    other = AdaptiveKLController(1.0, 1.0, 1.0)
    other.load_state_dict(kl.state_dict())
    assert other.floor == 0.09
    old = {"value": 0.05, "target": 4.0, "horizon": 100.0}  # a checkpoint from before the floor existed
    other.load_state_dict(old)
    assert other.floor == 0.0
    assert AdaptiveKLController(0.01, 4.0, 100, floor=0.05).value == 0.05
    with pytest.raises(ValueError, match="floor"):
        AdaptiveKLController(0.1, 4.0, 100, floor=-1.0)


def test_dpo_sigmoid_and_ipo_worked_example():
    pc, pr, rc, rr = t([-10.0]), t([-12.0]), t([-11.0]), t([-11.0])
    # h = (-10 + 11) - (-12 + 11) = 2; β = 0.5 -> z = 1 -> -log σ(1) = 0.3132617
    out = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert out.loss.item() == pytest.approx(0.3132617, abs=1e-6)
    assert out.chosen_rewards.item() == pytest.approx(0.5)  # 0.5·(-10 + 11)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)  # 0.5·(-12 + 11)
    # label smoothing 0.1: 0.9·0.3132617 + 0.1·(-log σ(-1) = 1.3132617) = 0.4132617
    assert dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1).loss.item() == pytest.approx(0.4132617, abs=1e-6)
    # margin 1: z = 1 - 1 = 0 -> log 2
    assert dpo_loss(pc, pr, rc, rr, beta=0.5, margin=t([1.0])).loss.item() == pytest.approx(math.log(2), abs=1e-6)
    # IPO: (h - 1/(2β))² = (2 - 1)² = 1 with β = 0.5; (2 - 5)² = 9 with β = 0.1
    assert dpo_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo").loss.item() == pytest.approx(1.0)
    assert dpo_loss(pc, pr, rc, rr, beta=0.1, loss_type="ipo").loss.item() == pytest.approx(9.0)
    with pytest.raises(ValueError, match="unknown DPO loss"):
        dpo_loss(pc, pr, rc, rr, loss_type="hinge")
