"""PPO updates on one :class:`~engine.trainers.ppo.experience.Experience`: epochs over shuffled mini-batches, advantage
whitening, the clipped policy and value losses (``engine.losses``), gradient clipping per role, and the KL
controller that sets β for the next rollout.

A mini-batch is ``mini_batch_size`` sequences, processed in chunks whose losses are weighted by their share of the
mini-batch's response tokens, so accumulation gives the token mean of the whole mini-batch. A chunk is packed
without padding, each prompt once for its responses in the chunk (``Experience.packed``; with k responses per
prompt the padded layout ran each prompt k times), and holds at most the tokens of ``backward_rows`` padded
sequences, which bounds the activation memory of one backward. With the rloo and grpo estimators no value is
trained, and the value's forward and backward are skipped. Policy and value are separate adapters, so their losses add without
interfering (and are backwarded one after the other); each role's gradient is clipped on its own (the value's is
often much larger early on).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from ...losses import AdaptiveKLController, FixedKLController, clipped_policy_loss, clipped_value_loss, explained_variance, whiten
from ...training import release_free_memory
from .experience import Experience
from .roles import POLICY, VALUE, PpoRoles


def make_kl_controller(kl_coef: float, adaptive: bool, target: float, horizon: float, floor: float = 0.0):
    if adaptive and target > 0:
        return AdaptiveKLController(kl_coef, target, horizon, floor)
    return FixedKLController(kl_coef)


class PpoTrainer:
    def __init__(
        self,
        roles: PpoRoles,
        optimizer: torch.optim.Optimizer,
        *,
        ppo_epochs: int = 4,
        mini_batch_size: int = 8,
        micro_batch_size: int = 8,
        clip_range: float = 0.2,
        value_clip: float = 0.2,
        value_coef: float = 0.1,
        max_grad_norm: float = 1.0,
        temperature: float = 1.0,
        whiten_advantages: bool = True,
        backward_rows: int = 2,
        train_value: bool = True,
    ):
        self.roles, self.optimizer = roles, optimizer
        self.ppo_epochs, self.mini_batch_size, self.micro_batch_size = ppo_epochs, mini_batch_size, micro_batch_size
        self.clip_range, self.value_clip, self.value_coef = clip_range, value_clip, value_coef
        self.max_grad_norm, self.temperature, self.whiten_advantages = max_grad_norm, temperature or 1.0, whiten_advantages
        # At most this many sequences go through one forward/backward: a micro-batch is split further into chunks of
        # ``backward_rows`` whose losses are weighted by their token share, so the gradient is the same (up to float
        # summation order) while the activation graph alive at once shrinks (SmolLM2, 8 x 128 tokens: the update's
        # peak RSS 4.5 GB with 8 rows at once, 1.8 GB with 2). 0: no further split.
        self.backward_rows = backward_rows
        # False with rloo and grpo: their baseline is the other responses' rewards, so no value is trained (or run)
        self.train_value = train_value
        self.policy_params = roles.parameters_of(POLICY)
        self.value_params = roles.parameters_of(VALUE)

    def step(self, exp: Experience, generator: torch.Generator, train_policy: bool = True) -> dict[str, float]:
        """PPO epochs over ``exp``; returns averaged metrics (``ppo/…``). ``generator`` shuffles the mini-batches.
        ``train_policy=False`` (a critic warm-up step) trains the value only: the policy runs no forward and gets no
        gradient, so the optimizer leaves it as it is (and the step reports no policy metrics)."""
        mask = exp.response_mask
        if self.whiten_advantages:
            exp.advantages = whiten(exp.advantages, mask)
        sums: dict[str, float] = defaultdict(float)
        n = 0
        B = exp.batch_size
        for _ in range(self.ppo_epochs):
            perm = torch.randperm(B, generator=generator)
            for start in range(0, B, self.mini_batch_size):
                mini = perm[start : start + self.mini_batch_size]
                tokens = float(exp.response_mask[mini].sum().clamp_min(1.0))
                for chunk in self.chunks(exp, mini):
                    micro = exp.select(chunk)
                    share = float(micro.response_mask.sum()) / tokens
                    stats = self._micro_step(micro, share, train_policy)
                    for k, v in stats.items():
                        sums[k] += v * share
                max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
                sums["ppo/grad_norm_policy"] += float(torch.nn.utils.clip_grad_norm_(self.policy_params, max_norm))
                if self.train_value:
                    sums["ppo/grad_norm_value"] += float(torch.nn.utils.clip_grad_norm_(self.value_params, max_norm))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                n += 1
        # once per PPO step rather than per update: a PPO step (rollout + ppo_epochs x mini-batch updates) already
        # spans several optimizer steps, which keeps the refault cost after a trim small (see RELEASE_EVERY)
        release_free_memory()
        out = {k: v / max(1, n) for k, v in sums.items()}
        if self.train_value:
            out["ppo/explained_variance"] = explained_variance(exp.values, exp.returns, mask)
        out["ppo/updates"] = float(n)
        return out

    def chunks(self, exp: Experience, mini: torch.Tensor) -> list[torch.Tensor]:
        """The mini-batch's rows in chunks of one forward and backward each. Rows of one prompt go next to each
        other, so a chunk packed without padding holds each prompt once (``Experience.packed``); a chunk takes rows
        while its packed tokens stay within ``backward_rows`` (at most ``micro_batch_size``; 0: ``micro_batch_size``)
        padded rows of the rollout, prompt width + response width each: the most one backward of the padded layout
        held. The token-weighted chunk losses add up to the mini-batch's loss in any grouping."""
        mini = mini[torch.argsort(exp.prompt_index[mini], stable=True)]
        rows = min(self.micro_batch_size, self.backward_rows) if self.backward_rows > 0 else self.micro_batch_size
        budget = rows * (exp.prompt_width + exp.response_width)
        prompt_len = exp.attention_mask[:, : exp.prompt_width].sum(1).tolist()
        response_len = exp.response_length.tolist()
        out: list[list[int]] = []
        used, last_group = 0, None
        for row in mini.tolist():
            group = int(exp.prompt_index[row])
            cost = response_len[row] + (prompt_len[row] if group != last_group else 0)
            if out and used + cost > budget:
                out.append([])
                used, cost = 0, response_len[row] + prompt_len[row]
            if not out:
                out.append([])
            out[-1].append(row)
            used, last_group = used + cost, group
        return [torch.tensor(c, dtype=torch.long) for c in out]

    def _micro_step(self, exp: Experience, weight: float, train_policy: bool = True) -> dict[str, float]:
        roles = self.roles
        mask = exp.response_mask
        # Packed: each prompt once for its responses in this chunk, no padding (the forwards of the padded layout
        # computed a prompt once per response, and every padding column)
        packed, bottom = exp.packed()
        targets = exp.sequences[:, exp.prompt_width :]
        # Policy and value are separate adapters (and heads), so d(pol + c·val) = d(pol) + c·d(val): two backward
        # passes give the same gradients as one on the sum, but only one role's graph (activations of a whole
        # backbone pass plus the [B, R, V] logits) is alive at a time, which halves the peak of the update.
        stats: dict[str, float] = {}
        loss = 0.0
        if train_policy:  # a critic warm-up step skips the policy's forward altogether
            logprobs, _ = roles.packed_logprobs(POLICY, packed, targets, self.temperature, bottom=bottom)
            pol = clipped_policy_loss(logprobs, exp.logprobs, exp.advantages, mask, self.clip_range)
            (pol.loss * weight).backward()
            del logprobs
            loss = float(pol.loss.detach())
            stats = {"ppo/policy_loss": loss, "ppo/clip_frac": float(pol.clip_frac),
                     "ppo/approx_kl": float(pol.approx_kl)}
        if not self.train_value:
            return {**stats, "ppo/loss": loss}
        values = roles.packed_values(packed, exp.response_width, bottom=bottom).float()
        val = clipped_value_loss(values, exp.values, exp.returns, mask, self.value_clip)
        (self.value_coef * val.loss * weight).backward()
        return {**stats, "ppo/value_loss": float(val.loss.detach()),
                "ppo/loss": loss + self.value_coef * float(val.loss.detach()),
                "ppo/value_clip_frac": float(val.clip_frac)}


def rollout_metrics(exp: Experience, texts: list[str], kl_coef: float) -> dict[str, float]:
    """What a rollout looked like: reward, cost, KL, entropy, length (``rollout/…``)."""
    lengths = exp.response_length.float()
    return {
        "rollout/score_mean": float(exp.score.mean()),
        "rollout/score_std": float(exp.score.std()) if exp.batch_size > 1 else 0.0,
        "rollout/reward_mean": float(exp.reward.mean()),
        "rollout/reward_std": float(exp.reward.std()) if exp.batch_size > 1 else 0.0,
        "rollout/cost_mean": float(exp.cost.mean()),
        "rollout/kl": float(exp.kl.mean()),
        "rollout/kl_coef": float(kl_coef),
        "rollout/entropy": float(exp.entropy.mean()),
        "rollout/response_length": float(lengths.mean()),
        "rollout/truncated_frac": float((~exp.finished).float().mean()),
        "rollout/empty_frac": float(sum(1 for t in texts if not t.strip()) / max(1, len(texts))),
        **_within_prompt_spread(exp),
    }


def _within_prompt_spread(exp: Experience) -> dict[str, float]:
    """With several responses per prompt: the score's mean spread among the responses to one prompt (what a
    leave-one-out baseline leaves for the policy to learn from, against ``rollout/score_std`` over the rollout)."""
    groups = torch.unique(exp.prompt_index)
    if len(groups) == exp.batch_size:
        return {}
    stds = [exp.score[exp.prompt_index == g].std() for g in groups if int((exp.prompt_index == g).sum()) > 1]
    return {"rollout/score_std_within_prompt": float(torch.stack(stds).mean())} if stds else {}

