"""The PPO update backwards policy and value one after the other (so only one role's graph is alive at a time):
the gradients must equal those of a single backward of the summed loss, on a tiny model."""

from __future__ import annotations

import torch
from peft import LoraConfig

from engine.losses import clipped_policy_loss, clipped_value_loss
from engine.models import load_model
from engine.trainers.ppo.experience_maker import ExperienceMaker
from engine.trainers.ppo.rewards import contains_rule
from engine.trainers.ppo.roles import POLICY, VALUE, PpoRoles
from engine.trainers.ppo.trainer import PpoTrainer


def _roles(tiny_model_dir):
    """Fresh PPO roles (policy and value adapters) on the tiny model, seeded, and its tokenizer."""
    torch.manual_seed(0)
    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32", quantize="none")
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
    return PpoRoles(loaded.model, lora, seed=0), loaded.tokenizer


def test_split_backward_gives_the_gradients_of_the_summed_loss(tiny_model_dir):
    roles, tok = _roles(tiny_model_dir)
    prompts = [tok.encode(f"hello {i}") for i in range(4)]
    convs = [[{"role": "user", "content": f"hello {i}"}] for i in range(4)]
    maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=5, forward_batch_size=2)
    exp, _ = maker.make(prompts, convs, 0.05, torch.Generator().manual_seed(0))
    # the value head starts at zero output; move it so the value loss has a gradient through the backbone too
    with torch.no_grad():
        roles.hm.heads[VALUE].weight.normal_(0, 0.5)
        for p in roles.parameters_of(POLICY) + roles.parameters_of(VALUE):
            p.add_(0.05 * torch.randn_like(p))
    params = roles.parameters_of(POLICY) + roles.parameters_of(VALUE)
    trainer = PpoTrainer(roles, torch.optim.SGD(params, lr=0.0), value_coef=0.3)
    micro = exp.select(torch.arange(exp.batch_size))

    trainer._micro_step(micro, 0.7)
    split = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None

    P, mask = micro.prompt_width, micro.response_mask
    lp, _ = roles.logprobs(POLICY, micro.sequences, micro.attention_mask, P)
    pol = clipped_policy_loss(lp, micro.logprobs, micro.advantages, mask, trainer.clip_range)
    v = roles.values(micro.sequences, micro.attention_mask, P).float()
    val = clipped_value_loss(v, micro.values, micro.returns, mask, trainer.value_clip)
    ((pol.loss + 0.3 * val.loss) * 0.7).backward()
    joint = [p.grad.clone() for p in params]

    assert sum(float(g.abs().sum()) for g in joint[: len(roles.parameters_of(POLICY))]) > 0
    assert sum(float(g.abs().sum()) for g in joint[len(roles.parameters_of(POLICY)):]) > 0
    for a, b in zip(split, joint):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


class _GradRecorder(torch.optim.SGD):
    """SGD with lr 0 that keeps a copy of the gradients of each step (the trainer zeroes them right after)."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)
        self.seen: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        self.seen.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def test_chunks_sorted_and_trimmed_give_the_gradient_of_one_whole_micro_batch(tiny_model_dir):
    roles, tok = _roles(tiny_model_dir)
    texts = ["hi", "hello there, how are you today my friend", "a much longer prompt about many many things", "ok",
             "tell me", "what is the weather like on the moon in winter"]
    prompts = [tok.encode(t) for t in texts]
    convs = [[{"role": "user", "content": t}] for t in texts]
    maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=6, forward_batch_size=3)
    exp, _ = maker.make(prompts, convs, 0.05, torch.Generator().manual_seed(0))
    assert exp.attention_mask[:, 0].sum() < exp.batch_size  # some prompts are left-padded
    with torch.no_grad():
        roles.hm.heads[VALUE].weight.normal_(0, 0.5)
    params = roles.parameters_of(POLICY) + roles.parameters_of(VALUE)

    def grads(backward_rows: int) -> list[torch.Tensor]:
        opt = _GradRecorder(params)
        trainer = PpoTrainer(roles, opt, ppo_epochs=1, mini_batch_size=exp.batch_size,
                             micro_batch_size=exp.batch_size, whiten_advantages=False, backward_rows=backward_rows,
                             max_grad_norm=0.0)
        trainer.step(exp, torch.Generator().manual_seed(1))
        return opt.seen[0]

    whole = grads(0)  # one forward/backward over all rows, padded to the longest prompt of the rollout
    chunked = grads(2)  # sorted by length, chunks of 2 trimmed to their own longest prompt and response
    assert sum(float(g.abs().sum()) for g in whole) > 0
    for a, b in zip(chunked, whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_packed_update_with_k_responses_per_prompt_gives_the_padded_gradient(tiny_model_dir):
    """k responses per prompt: the update packs each prompt once for the responses of a chunk, within the token
    budget of backward_rows padded rows, and the step's gradient is that of the padded forward over every row."""
    roles, tok = _roles(tiny_model_dir)
    texts = ["hi", "a much longer prompt about many many things, and then some more", "tell me"]
    prompts = [tok.encode(t) for t in texts]
    convs = [[{"role": "user", "content": t}] for t in texts]
    maker = ExperienceMaker(roles, tok, contains_rule("e"), max_new_tokens=6, forward_batch_size=6,
                            samples_per_prompt=3, advantage_estimator="rloo")
    exp, _ = maker.make(prompts, convs, 0.05, torch.Generator().manual_seed(0))
    params = roles.parameters_of(POLICY)
    trainer = PpoTrainer(roles, _GradRecorder(params), ppo_epochs=1, mini_batch_size=9, micro_batch_size=9,
                         whiten_advantages=False, backward_rows=2, max_grad_norm=0.0, train_value=False)
    shuffled = torch.tensor([4, 0, 8, 2, 6, 1, 5, 3, 7])
    chunks = trainer.chunks(exp, shuffled)
    assert sorted(torch.cat(chunks).tolist()) == list(range(9))
    budget = 2 * (exp.prompt_width + exp.response_width)
    plen = exp.attention_mask[:, : exp.prompt_width].sum(1)
    for c in chunks:
        packed, _ = exp.select(c).packed()
        assert packed.input_ids.shape[1] <= budget or len(c) == 1
        # rows of one prompt are adjacent, so the packed row holds each prompt once
        groups = exp.prompt_index[c].tolist()
        assert groups == sorted(groups)
        assert packed.input_ids.shape[1] == int(exp.response_length[c].sum()) + sum(
            int(plen[c[groups.index(g)]]) for g in set(groups))
    assert len(chunks) < 9  # some chunk shares a prompt between responses

    trainer.step(exp, torch.Generator().manual_seed(1))
    packed_grads = trainer.optimizer.seen[0]
    for p in params:
        p.grad = None
    P, mask = exp.prompt_width, exp.response_mask
    lp, _ = roles.logprobs(POLICY, exp.sequences, exp.attention_mask, P)
    clipped_policy_loss(lp, exp.logprobs, exp.advantages, mask, trainer.clip_range).loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in params) > 0
    for a, p in zip(packed_grads, params):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
