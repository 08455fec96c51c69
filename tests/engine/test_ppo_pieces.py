"""PPO's pieces on their own: reward shaping and GAE on a worked example, the normaliser, the KL controller, the
experience record's mini-batch selection, and sampling (EOS handling, reproducibility from the generator)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.losses import gae
from engine.trainers.ppo.experience import Experience
from engine.trainers.ppo.experience_maker import ExperienceMaker, RunningMoments
from engine.trainers.ppo.sampling import draw, sample_responses
from engine.trainers.ppo.trainer import make_kl_controller


def test_token_rewards_and_gae_worked_example():
    # One response of 3 tokens (then padding), β = 0.5, sequence reward 2 at the last token.
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    r = ExperienceMaker.token_rewards(torch.tensor([2.0]), logprobs, ref, mask, kl_coef=0.5)
    # kl = [0.5, −1, 0]; −β·kl = [−0.25, 0.5, 0]; +2 at t=2
    assert torch.allclose(r, torch.tensor([[-0.25, 0.5, 2.0, 0.0]]))
    values = torch.tensor([[1.0, 0.5, 1.5, 9.0]])
    adv, ret = gae(r, values, mask, gamma=0.9, lam=0.5)
    # δ2 = 2 − 1.5 = 0.5;             A2 = 0.5
    # δ1 = 0.5 + 0.9·1.5 − 0.5 = 1.35; A1 = 1.35 + 0.45·0.5 = 1.575
    # δ0 = −0.25 + 0.9·0.5 − 1 = −0.8; A0 = −0.8 + 0.45·1.575 = −0.09125
    assert torch.allclose(adv, torch.tensor([[-0.09125, 1.575, 0.5, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.90875, 2.075, 2.0, 0.0]]))


class _Stub:
    """Enough of an ExperienceMaker to call shape_rewards (no model needed)."""

    def __init__(self, **kw):
        self.moments = RunningMoments()
        self.normalize_reward, self.reward_clip, self.cost_weight, self.missing_eos_penalty = True, 1.5, 2.0, 0.75
        self.__dict__.update(kw)


def test_shape_rewards_normalises_clips_subtracts_cost_and_penalises_truncation():
    stub = _Stub()
    score = torch.tensor([0.0, 2.0, 4.0, 10.0])
    cost = torch.tensor([0.0, 0.5, 0.0, 0.0])
    finished = torch.tensor([True, True, False, True])
    out = ExperienceMaker.shape_rewards(stub, score, cost, finished)
    mean, std = score.mean(), score.std(unbiased=False)
    z = ((score - mean) / std).clamp(-1.5, 1.5)
    expected = z - 2.0 * cost - 0.75 * (~finished).float()
    assert torch.allclose(out, expected)
    assert out[3] == pytest.approx(1.5)  # clipped


def test_running_moments_match_the_whole_sample():
    m = RunningMoments()
    a, b = torch.randn(7), torch.randn(5) * 3 + 1
    m.update(a)
    m.update(b)
    both = torch.cat([a, b]).double()
    assert m.mean == pytest.approx(float(both.mean()))
    assert m.std == pytest.approx(float(both.std(unbiased=False)))
    m2 = RunningMoments()
    m2.load_state_dict(m.state_dict())
    assert m2.state_dict() == m.state_dict()


def test_kl_controller_adapts_towards_the_target_and_fixed_does_not():
    ctl = make_kl_controller(0.1, True, target=6.0, horizon=100)
    ctl.update(12.0, 10)  # KL twice the target: error clipped to +0.2 → β·(1 + 0.2·10/100)
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(3.0, 10)  # half the target: error −0.5 clipped to −0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)
    fixed = make_kl_controller(0.1, False, target=6.0, horizon=100)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1


def _exp(B=3, P=2, R=4) -> Experience:
    lengths = torch.tensor([4, 1, 2])
    rmask = (torch.arange(R)[None, :] < lengths[:, None]).float()
    z = torch.zeros(B, R)
    return Experience(
        sequences=torch.arange(B * (P + R)).view(B, P + R), attention_mask=torch.ones(B, P + R, dtype=torch.long),
        response_mask=rmask, logprobs=z, ref_logprobs=z, values=z, rewards=z, advantages=z, returns=z,
        score=torch.zeros(B), cost=torch.zeros(B), reward=torch.zeros(B), kl=torch.zeros(B), entropy=torch.zeros(B),
        finished=torch.ones(B, dtype=torch.bool), prompt_index=torch.arange(B), prompt_width=P,
    )


def test_experience_select_trims_to_the_longest_selected_response():
    exp = _exp()
    sub = exp.select([1, 2])
    assert sub.batch_size == 2 and sub.response_width == 2
    assert sub.sequences.shape == (2, 4) and sub.logprobs.shape == (2, 2) and sub.score.shape == (2,)
    assert torch.equal(sub.sequences, exp.sequences[[1, 2], :4])
    assert exp.select([0]).response_width == 4


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_sampling_masks_after_eos_and_is_reproducible_from_the_generator(tiny_lm):
    model, tok = tiny_lm
    prompts = [[1, 40, 41, 42], [1, 50], [1, 60, 61]]
    # Make EOS likely so some rows finish early: every token id below 20 counts as an end token.
    eos = list(range(3, 20)) + [tok.eos_token_id]
    g = torch.Generator().manual_seed(11)
    a = sample_responses(model, prompts, max_new_tokens=12, eos_ids=eos, pad_id=tok.pad_token_id, generator=g)
    state_after = g.get_state()
    g2 = torch.Generator().manual_seed(11)
    b = sample_responses(model, prompts, max_new_tokens=12, eos_ids=eos, pad_id=tok.pad_token_id, generator=g2)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(g2.get_state(), state_after)
    P = a.prompt_width
    assert P == 4 and torch.equal(a.attention_mask[:, :P], torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]]))
    for row in range(3):
        m = a.response_mask[row]
        n = int(m.sum())
        assert torch.equal(m[:n], torch.ones(n)) and not m[n:].any()  # a prefix
        resp = a.sequences[row, P:]
        if a.finished[row]:
            assert int(resp[n - 1]) in eos and not any(int(t) in eos for t in resp[: n - 1])
            assert (resp[n:] == tok.pad_token_id).all()
        else:
            assert n == a.response_mask.shape[1]
    assert torch.equal(a.attention_mask[:, P:].float(), a.response_mask)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_and_entropy_are_those_of_a_fresh_forward(tiny_lm, temperature):
    """The sampler's per-token log-probabilities and entropies (cached decode, packed prefill) equal a plain forward
    over the finished sequences, at the sampling temperature, to float rounding; 0 on padding."""
    model, tok = tiny_lm
    prompts = [[1, 40, 41, 42, 43, 44], [1, 50], [1, 60, 61]]
    s = sample_responses(model, prompts, max_new_tokens=10, eos_ids=list(range(3, 12)) + [tok.eos_token_id],
                         pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(3), temperature=temperature,
                         samples_per_prompt=2)
    P = s.prompt_width
    position_ids = (s.attention_mask.cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        logits = model(input_ids=s.sequences, attention_mask=s.attention_mask, position_ids=position_ids).logits
    logp = torch.log_softmax(logits[:, P - 1 : -1].float() / temperature, dim=-1)
    want = logp.gather(-1, s.sequences[:, P:].unsqueeze(-1)).squeeze(-1) * s.response_mask
    entropy = -(logp.exp() * logp).sum(-1) * s.response_mask
    assert s.response_mask.sum() > 12 and (s.response_mask == 0).any()
    assert torch.allclose(s.logprobs, want, atol=1e-4), (s.logprobs - want).abs().max()
    assert torch.allclose(s.entropy, entropy, atol=1e-4)
    assert not s.logprobs[s.response_mask == 0].any() and not s.entropy[s.response_mask == 0].any()


def test_experience_select_drops_prompt_columns_that_are_padding_in_every_selected_row():
    exp = _exp(P=4)
    # left-padded prompts: row 0 has 3 real prompt tokens, rows 1 and 2 have 1 and 2
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, :1] = 0
    mask[1, :3] = 0
    mask[2, :2] = 0
    exp.attention_mask = mask
    sub = exp.select([1, 2])
    assert sub.prompt_width == 2  # the longest selected prompt (row 2: 2 tokens)
    assert sub.sequences.shape == (2, 2 + 2)  # and the longest selected response (2)
    assert torch.equal(sub.sequences, exp.sequences[[1, 2], 2:6])
    assert torch.equal(sub.attention_mask, torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]]))
    whole = exp.select([0, 1, 2])
    assert whole.prompt_width == 3 and torch.equal(whole.sequences, exp.sequences[:, 1:])


def test_draw_follows_the_distribution_never_picks_a_zero_and_repeats_with_the_generator():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(50_000, 1)
    tokens = draw(probs, torch.Generator().manual_seed(7))
    share = torch.bincount(tokens, minlength=6).double() / len(tokens)
    assert share[[0, 2, 5]].sum() == 0
    assert torch.allclose(share[[1, 3, 4]], torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.01)
    again = [draw(probs[:100], torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*again)


def test_a_row_seeded_sample_does_not_depend_on_the_rows_beside_it(tiny_lm):
    """Seeds per (prompt, sample): a prompt's responses are the same sampled alone or beside other prompts (as in
    one process or split between two), and the seeds of different rows give different streams."""
    from engine.trainers.ppo.sampling import row_seed

    model, tok = tiny_lm
    prompts = [[1, 40, 41, 42], [1, 50], [1, 60, 61, 62, 63]]
    seeds = [row_seed(3, 7, p, j) for p in range(3) for j in range(2)]
    kwargs = dict(max_new_tokens=8, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, samples_per_prompt=2)
    together = sample_responses(model, prompts, row_seeds=seeds, **kwargs)
    first = sample_responses(model, prompts[:1], row_seeds=seeds[:2], **kwargs)
    rest = sample_responses(model, prompts[1:], row_seeds=seeds[2:], **kwargs)
    P = together.prompt_width

    def responses(s):
        return [row[s.prompt_width:][m.bool()].tolist() for row, m in zip(s.sequences, s.response_mask)]

    assert responses(together) == responses(first) + responses(rest)
    assert torch.allclose(together.logprobs[:2, : first.logprobs.shape[1]], first.logprobs, atol=1e-5)
    assert responses(together)[0] != responses(together)[1]  # two samples of one prompt differ
    assert len(set(seeds)) == 6 and P == 5
