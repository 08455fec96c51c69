"""The family matrix: for tiny random Llama, Qwen2, Qwen3, Gemma 2, Gemma 3, Mistral and Phi-3 checkpoints
(tests/tiny_models.py: Gemma 2 with small attention and final soft-caps, sliding windows shorter than these
sequences), the packed layouts of SFT, the reward model, DPO and PPO give the losses, rewards, log-probabilities and
gradients of the model's own forward on a padded batch with its eager attention; a kernel that drops the soft-cap or
the window, or logits without the final soft-cap, fail the same comparison; the family check passes every family
and refuses an architecture the packed layouts cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.packing import ATTN_IMPLEMENTATION, encode_chat, pack, packed_token_losses, register_packed_attention
from engine.reward_model import HeadedModel, pair_rewards
from engine.rm_data import ChatEncoder, collate_pairs
from engine.trainers.dpo import collate_dpo, pair_logprobs
from tests.tiny_models import FAMILIES, SHORT_WINDOW, build_tiny_causal_lm

CONVERSATIONS = [
    ([{"role": "user", "content": "What is the capital of France, and why is it that city?"}],
     "Paris is the capital of France: it has been the seat of government for centuries."),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two plus two?"}], "Four."),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
     "A longer answer that goes on for a while, to make this example the longest of the three by far."),
]
PAIRS = [
    ([{"role": "user", "content": "Name a colour of the sky and say why it looks that way."}],
     "Blue, because air scatters blue light the most.", "Green."),
    ([{"role": "user", "content": "How many legs does a spider have?"}], "Eight.",
     "A spider has six legs, like every other insect, which is wrong but long."),
]
# Float32 throughout: the packed and the padded forward differ by rounding only.
ATOL, RTOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {arch: build_tiny_causal_lm(root / arch, arch=arch) for arch in FAMILIES}


def _lora() -> LoraConfig:
    # random A and B (not peft's zero B), so the adapter changes the model and every LoRA weight gets a gradient
    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)


def _eager(folder: Path):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")


def _padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _response_logprobs(logits: torch.Tensor, ids: torch.Tensor, starts: list[int], ends: list[int]) -> list[torch.Tensor]:
    """Per row, log p(token j | tokens < j) for j in [start, end), from full-sequence logits [B, L, V]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return [logp[i, s - 1 : e - 1].gather(-1, ids[i, s:e].unsqueeze(-1)).squeeze(-1)
            for i, (s, e) in enumerate(zip(starts, ends))]


def _assert_grads_equal(a: torch.nn.Module, b: torch.nn.Module) -> int:
    n = 0
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is None and pb.grad is None:
            continue
        assert pa.grad is not None and pb.grad is not None, name
        # float32 rounding grows with the gradient's own size (summed log-probabilities of whole responses)
        atol = ATOL * max(1.0, float(pb.grad.abs().max()))
        torch.testing.assert_close(pa.grad, pb.grad, atol=atol, rtol=RTOL, msg=lambda m, name=name: f"{name}: {m}")
        n += 1
    return n


# ---------------------------------------------------------------------------------------------- SFT
def sft_difference(folder: Path) -> tuple[float, torch.nn.Module, torch.nn.Module]:
    """(largest loss difference, packed model, padded model) of SFT's packed token losses against the model's own
    forward on a right-padded batch; both models have been backwarded through their summed loss."""
    tok = AutoTokenizer.from_pretrained(folder)
    encs = [encode_chat(tok, p, r, 256) for p, r in CONVERSATIONS]
    assert max(len(e.ids) for e in encs) > 3 * SHORT_WINDOW  # windows bite
    register_packed_attention()
    packed_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    packed_model.set_attn_implementation(ATTN_IMPLEMENTATION)
    packed = packed_token_losses(packed_model, pack(encs))
    packed.sum().backward()

    ref_model = _eager(folder)
    ids, mask = _padded([e.ids for e in encs], tok.pad_token_id)
    logits = ref_model(input_ids=ids, attention_mask=mask).logits
    ref = -torch.cat(_response_logprobs(logits, ids, [e.n_prompt for e in encs], [len(e.ids) for e in encs]))
    ref.sum().backward()
    assert packed.shape == ref.shape
    return float((packed - ref).detach().abs().max()), packed_model, ref_model


@pytest.mark.parametrize("arch", FAMILIES)
def test_sft_packed_losses_and_gradients_equal_the_models_own_forward(family_dirs, arch):
    diff, packed_model, ref_model = sft_difference(family_dirs[arch])
    assert diff < ATOL
    assert _assert_grads_equal(packed_model, ref_model) > 10  # every weight of the model, not just a few


# ---------------------------------------------------------------------------------------------- reward model
def _encoded_pairs(folder: Path):
    tok = AutoTokenizer.from_pretrained(folder)
    enc = ChatEncoder(tok, 256)
    pairs = [enc.encode(p, c, r) for p, c, r in PAIRS]
    return tok, pairs


def _headed(folder: Path, *, eager: bool, head: bool) -> HeadedModel:
    model = _eager(folder) if eager else AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    hm = HeadedModel(model)
    hm.add_adapter("policy", _lora(), head=head, seed=0)
    hm.activate("policy")
    return hm


@pytest.mark.parametrize("arch", FAMILIES)
def test_reward_model_packed_pairs_equal_the_models_own_padded_forward(family_dirs, arch):
    tok, pairs = _encoded_pairs(family_dirs[arch])
    packed_hm, padded_hm = _headed(family_dirs[arch], eager=False, head=True), _headed(family_dirs[arch], eager=True,
                                                                                       head=True)
    rewards = {}
    for name, hm, layout in (("packed", packed_hm, "packed"), ("padded", padded_hm, "padded")):
        rc, rr = pair_rewards(hm, "policy", collate_pairs(pairs, tok.pad_token_id, layout=layout))
        (-F.logsigmoid(rc - rr)).sum().backward()
        rewards[name] = torch.cat([rc, rr]).detach()
    torch.testing.assert_close(rewards["packed"], rewards["padded"], atol=ATOL, rtol=RTOL)
    assert _assert_grads_equal(packed_hm, padded_hm) > 10


# ---------------------------------------------------------------------------------------------- DPO
def _own_pair_logprobs(hm: HeadedModel, pairs, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probabilities (chosen [B], rejected [B]) from the peft model's own forward."""
    rows, starts, ends = [], [], []
    for p in pairs:
        for resp in (p.chosen_ids, p.rejected_ids):
            rows.append(p.prompt_ids + resp)
            starts.append(len(p.prompt_ids))
            ends.append(len(p.prompt_ids) + len(resp))
    ids, mask = _padded(rows, pad_id)
    logits = hm.peft(input_ids=ids, attention_mask=mask).logits
    sums = torch.stack([lp.sum() for lp in _response_logprobs(logits, ids, starts, ends)])
    return sums[0::2], sums[1::2]


@pytest.mark.parametrize("arch", FAMILIES)
def test_dpo_packed_logprobs_equal_the_models_own_padded_forward(family_dirs, arch):
    tok, pairs = _encoded_pairs(family_dirs[arch])
    packed_hm, padded_hm = _headed(family_dirs[arch], eager=False, head=False), _headed(family_dirs[arch], eager=True,
                                                                                        head=False)
    pc, pr, _, _ = pair_logprobs(packed_hm, "policy", collate_dpo(pairs))
    rc, rr = _own_pair_logprobs(padded_hm, pairs, tok.pad_token_id)
    torch.testing.assert_close(torch.cat([pc, pr]), torch.cat([rc, rr]), atol=1e-4, rtol=RTOL)
    (pc - 0.5 * pr).sum().backward()
    (rc - 0.5 * rr).sum().backward()
    assert _assert_grads_equal(packed_hm, padded_hm) > 10


# ---------------------------------------------------------------------------------------------- PPO
@pytest.mark.parametrize("arch", FAMILIES)
def test_ppo_packed_groups_equal_the_models_own_forward(family_dirs, arch):
    from engine.trainers.ppo.packing import pack_groups
    from engine.trainers.ppo.roles import POLICY, PpoRoles

    tok, pairs = _encoded_pairs(family_dirs[arch])
    # one prompt with two sampled responses, another with one: the packed rollout PPO scores
    prompts = [pairs[0].prompt_ids, pairs[0].prompt_ids, pairs[1].prompt_ids]
    responses = [pairs[0].chosen_ids, pairs[0].rejected_ids, pairs[1].rejected_ids]
    roles = PpoRoles(AutoModelForCausalLM.from_pretrained(family_dirs[arch], dtype=torch.float32), _lora(), seed=0,
                     share_frozen_layers=False)
    width = max(len(r) for r in responses)
    targets = torch.zeros((len(responses), width), dtype=torch.long)
    for i, r in enumerate(responses):
        targets[i, : len(r)] = torch.tensor(r)
    with torch.no_grad():
        packed, _ = roles.packed_logprobs(POLICY, pack_groups(prompts, responses), targets)
        roles.hm.activate(POLICY)
        own = _own_pair_logprobs_rows(roles.hm, prompts, responses, tok.pad_token_id)
    for i, lp in enumerate(own):
        torch.testing.assert_close(packed[i, : len(lp)], lp, atol=1e-4, rtol=RTOL)


@pytest.mark.parametrize("arch", FAMILIES)
def test_ppo_sampling_continues_as_the_models_own_generate(family_dirs, arch):
    """Greedy rollouts (two prompts longer than the short sliding window, two responses each) are the tokens the
    model's own ``generate`` gives each prompt alone: the rollout's prefill and cache keep what the model attends to."""
    from engine.trainers.ppo.sampling import sample_responses

    tok, pairs = _encoded_pairs(family_dirs[arch])
    prompts = [pairs[0].prompt_ids, pairs[1].prompt_ids]
    assert min(len(p) for p in prompts) > SHORT_WINDOW and len(prompts[0]) != len(prompts[1])
    model = AutoModelForCausalLM.from_pretrained(family_dirs[arch], dtype=torch.float32)
    new = 12
    sampled = sample_responses(model, prompts, max_new_tokens=new, eos_ids=[tok.eos_token_id],
                               pad_id=tok.pad_token_id, temperature=0.0, samples_per_prompt=2)
    width = sampled.prompt_width
    with _eager_attention(model):
        for row in range(4):
            prompt = prompts[row // 2]
            own = model.generate(torch.tensor([prompt]), attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
                                 do_sample=False, max_new_tokens=new, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)[0, len(prompt):].tolist()
            n = int(sampled.response_mask[row].sum())
            assert sampled.sequences[row, width : width + n].tolist() == own[:n], (arch, row)
            assert n == len(own)


def _own_pair_logprobs_rows(hm: HeadedModel, prompts, responses, pad_id: int) -> list[torch.Tensor]:
    rows = [list(p) + list(r) for p, r in zip(prompts, responses)]
    ids, mask = _padded(rows, pad_id)
    with _eager_attention(hm.transformer()):
        logits = hm.peft(input_ids=ids, attention_mask=mask).logits
    return _response_logprobs(logits, ids, [len(p) for p in prompts], [len(x) for x in rows])


class _eager_attention:
    """The model's own eager attention inside the block."""

    def __init__(self, model):
        self.config = model.config

    def __enter__(self):
        self.previous = self.config._attn_implementation
        self.config._attn_implementation = "eager"

    def __exit__(self, *exc):
        self.config._attn_implementation = self.previous


# ---------------------------------------------------------------------------------------------- the tests can fail
def test_a_dropped_softcap_window_or_final_cap_fails_the_comparison(family_dirs, monkeypatch):
    """The comparison above is sharp enough: a kernel that leaves out the attention soft-cap (Gemma 2) or the
    sliding window (Mistral), or logits without the final soft-cap (Gemma 2), miss the model's own forward by far
    more than the tolerance."""
    import engine.attention_spans as spans
    import engine.packing as packing

    honest = spans.span_attention

    def without(name):
        def kernel(*args, **kwargs):
            kwargs[name] = None
            return honest(*args, **kwargs)
        return kernel

    monkeypatch.setattr(packing, "span_attention", without("softcap"))
    assert sft_difference(family_dirs["gemma2"])[0] > 100 * ATOL
    monkeypatch.setattr(packing, "span_attention", without("sliding_window"))
    assert sft_difference(family_dirs["mistral"])[0] > 100 * ATOL
    monkeypatch.setattr(packing, "span_attention", honest)
    monkeypatch.setattr(packing, "head_transform", lambda lm: {"scale": 1.0, "softcap": None})
    assert sft_difference(family_dirs["gemma2"])[0] > 100 * ATOL


# ---------------------------------------------------------------------------------------------- the family check
@pytest.mark.parametrize("arch", FAMILIES)
def test_family_check_passes_every_family_and_says_what_it_honours(family_dirs, arch):
    from engine.families import check_trainable

    line = check_trainable(AutoModelForCausalLM.from_pretrained(family_dirs[arch], dtype=torch.float32))
    assert arch in line.lower()
    if arch == "gemma2":
        assert "soft-cap 5" in line and f"sliding window of {SHORT_WINDOW} tokens on 1 of 2 layers" in line
        assert "final logit soft-cap 2" in line
    if arch == "llama":
        assert "plain causal attention" in line


def test_family_check_refuses_an_architecture_outside_the_attention_interface(tmp_path):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    from engine.families import check_trainable
    from engine.jobs import JobError

    model = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2,
                                           attention_types=[[["global"], 2]], max_position_embeddings=64))
    with pytest.raises(JobError, match=r"GPTNeoForCausalLM \(gpt_neo\) cannot be trained"):
        check_trainable(model)


def test_family_check_refuses_logits_it_cannot_reproduce(family_dirs):
    """A model whose own forward transforms its logits in a way the engine does not reproduce is refused (a
    patched forward stands in for such an architecture)."""
    from engine.families import check_trainable
    from engine.jobs import JobError

    model = AutoModelForCausalLM.from_pretrained(family_dirs["llama"], dtype=torch.float32)
    own_forward = model.forward

    def doubled(*args, **kwargs):
        out = own_forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    model.forward = doubled
    with pytest.raises(JobError, match="probe"):
        check_trainable(model)
