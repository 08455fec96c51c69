"""Rollouts → :class:`~engine.trainers.ppo.experience.Experience`: sampling, scoring, reward shaping, GAE.

1. **Sampling** (:mod:`.sampling`): the rollout's k × prompts rows in one batch, each prompt prefilled once
   without padding, drawing from a ``torch.Generator`` the job owns and checkpoints, so a resumed run samples
   exactly the same responses; the policy's log-probability and entropy of every sampled token come with it.
2. **Scoring**, in chunks of about ``forward_batch_size`` rows packed without padding, each prompt once for all its
   responses (``engine.trainers.ppo.packing``): log-probabilities under the reference, values, the reward model's
   score of the whole response, and the safety cost. On SmolLM2 (8 prompts × 4 responses, prompts up to 128
   tokens, 64 new tokens, 2 threads) packing took a rollout from 29 s to 18 s (sampling 14.5 → 11 s, scoring 14.5
   → 7 s); taking the policy's figures from the sampler saves one more pass of the policy.
3. **Shaping**: the score is normalised by running moments (:class:`RunningMoments`) and clipped; the safety cost
   times its weight and a penalty for a response cut off before end-of-sequence are subtracted; the per-token
   reward is ``−β·(logπ − logπ_ref)`` with the sequence reward added at the last response token.
4. **Advantages**: GAE (``engine.losses.gae``) over the value's estimates gives advantages and returns; or, with
   several responses per prompt and the ``rloo`` estimator, each response's KL-penalised sequence reward minus the
   mean of the other responses to its prompt (``engine.losses.leave_one_out_advantages``), on every one of its
   tokens, with no value at all; with ``grpo``, that reward minus its prompt's mean over the prompt's spread
   (``engine.losses.group_normalized_advantages``). The KL penalty stays in the reward with every estimator (TRL's
   GRPO puts it in the loss instead).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from workbench.configs import ADVANTAGE_ESTIMATORS, GROUP_ESTIMATORS

from ...losses import gae, group_normalized_advantages, leave_one_out_advantages
from .experience import Experience
from .packing import chunks_of_groups, pack_groups
from .rewards import RewardSource
from .sampling import Sampled, sample_responses
from .roles import POLICY, PpoRoles

Messages = list[dict[str, str]]
Reduce = Callable[[Tensor], Tensor]  # a tensor summed over every process of a distributed run


class RunningMoments:
    """Running mean and standard deviation of every score seen (Chan et al.'s parallel update)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 0.0

    def update(self, x: Tensor, reduce: Reduce | None = None) -> None:
        """Take in the scores ``x``; with ``reduce`` (a sum over processes), every process's scores."""
        x = x.double()
        sums = torch.stack([torch.tensor(float(x.numel()), dtype=torch.float64), x.sum(), (x * x).sum()])
        if reduce is not None:
            sums = reduce(sums)
        n, s1, s2 = (float(v) for v in sums)
        if n == 0:
            return
        b_mean = s1 / n
        b_var = max(0.0, s2 / n - b_mean * b_mean)
        total = self.count + n
        delta = b_mean - self.mean
        if self.count == 0:
            self.mean, self.var = b_mean, b_var
        else:
            m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
            self.mean, self.var = self.mean + delta * n / total, m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


class ExperienceMaker:
    """Makes one :class:`Experience` from a batch of prompts (token ids + their conversations)."""

    def __init__(
        self,
        roles: PpoRoles,
        tokenizer: Any,
        reward: RewardSource,
        *,
        cost: RewardSource | None = None,
        cost_weight: float = 1.0,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        forward_batch_size: int = 8,
        gamma: float = 1.0,
        lam: float = 0.95,
        normalize_reward: bool = True,
        reward_clip: float = 5.0,
        missing_eos_penalty: float = 1.0,
        eos_ids: Sequence[int] | None = None,
        samples_per_prompt: int = 1,
        advantage_estimator: str = "gae",
    ):
        if advantage_estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage_estimator must be one of {', '.join(ADVANTAGE_ESTIMATORS)}, not "
                             f"{advantage_estimator!r}")
        if advantage_estimator in GROUP_ESTIMATORS and samples_per_prompt < 2:
            raise ValueError(f"{advantage_estimator} needs at least two responses per prompt (samples_per_prompt >= 2)")
        self.samples_per_prompt, self.advantage_estimator = samples_per_prompt, advantage_estimator
        self.roles, self.tokenizer, self.reward, self.cost = roles, tokenizer, reward, cost
        self.cost_weight = cost_weight
        self.max_new_tokens, self.temperature, self.top_k, self.top_p = max_new_tokens, temperature, top_k, top_p
        self.forward_batch_size = forward_batch_size
        self.gamma, self.lam = gamma, lam
        self.normalize_reward, self.reward_clip, self.missing_eos_penalty = normalize_reward, reward_clip, missing_eos_penalty
        self.moments = RunningMoments()
        # seconds of the last rollout's sampling (decoding included) and scoring (every role's forward, the reward)
        self.timings: dict[str, float] = {}
        if eos_ids is None:
            from ...generation import _eos_ids

            eos_ids = _eos_ids(roles.transformer, tokenizer)
        self.eos_ids = list(eos_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    # ------------------------------------------------------------------ pieces
    def decode(self, sampled: Sampled) -> list[str]:
        texts = []
        for row, m in zip(sampled.sequences[:, sampled.prompt_width:].tolist(), sampled.response_mask.tolist()):
            kept = [t for t, k in zip(row, m) if k and t not in self.eos_ids]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True).strip())
        return texts

    def shape_rewards(self, score: Tensor, cost: Tensor, finished: Tensor, reduce: Reduce | None = None) -> Tensor:
        """Sequence reward [B]: normalised and clipped score, minus weighted cost and the missing-EOS penalty (the
        running moments take in every process's scores with ``reduce``)."""
        r = score.float()
        if self.normalize_reward:
            self.moments.update(r, reduce)
            r = (r - self.moments.mean) / max(self.moments.std, 1e-3)
        if self.reward_clip > 0:
            r = r.clamp(-self.reward_clip, self.reward_clip)
        r = r - self.cost_weight * cost.float()
        return r - self.missing_eos_penalty * (~finished).float()

    @staticmethod
    def token_rewards(reward: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
        """Per-token rewards [B, R]: −β·(logπ − logπ_ref) on each response token, plus ``reward`` [B] at the last."""
        kl = (logprobs - ref_logprobs) * mask
        rewards = -kl_coef * kl
        last = (mask.sum(1).long() - 1).clamp_min(0)
        rewards[torch.arange(rewards.shape[0]), last] += reward.to(rewards.dtype)
        return rewards * mask

    # ------------------------------------------------------------------ the whole rollout
    @torch.no_grad()
    def make(self, prompt_ids: Sequence[Sequence[int]], conversations: Sequence[Messages], kl_coef: float,
             generator: torch.Generator | None = None, *, row_seeds: Sequence[int] | None = None,
             reduce: Reduce | None = None) -> tuple[Experience, list[str]]:
        """One rollout: ``samples_per_prompt`` responses to each prompt, the copies of a prompt next to each other
        (row ``r`` answers prompt ``r // samples_per_prompt``, which ``Experience.prompt_index`` records), sampled
        from ``generator`` or with a seed per row (``row_seeds``). Several processes each make their share of a
        rollout: ``reduce`` sums over them what must see the whole rollout (the reward normaliser's moments); the
        advantages of rloo and grpo are per prompt, and a prompt's responses are all in one process."""
        roles, k = self.roles, self.samples_per_prompt
        group = torch.arange(len(prompt_ids)).repeat_interleave(k)
        unique_prompts = list(prompt_ids)
        prompt_ids = [unique_prompts[int(g)] for g in group]
        conversations = [conversations[int(g)] for g in group]
        use_value = self.advantage_estimator == "gae"
        t0 = time.perf_counter()
        roles.hm.activate(POLICY)
        sampled = sample_responses(
            roles.transformer, unique_prompts, max_new_tokens=self.max_new_tokens, eos_ids=self.eos_ids,
            pad_id=self.pad_id, generator=generator, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            samples_per_prompt=k, row_seeds=row_seeds,
        )
        texts = self.decode(sampled)
        t_sampled = time.perf_counter()
        P, mask = sampled.prompt_width, sampled.response_mask
        R = mask.shape[1]
        targets = sampled.sequences[:, P:]
        responses = [row[:n] for row, n in zip(targets.tolist(), mask.sum(1).long().tolist())]
        temp = self.temperature if self.temperature > 0 else 1.0
        refs, vals, bottoms = [], [], []
        # Scored packed (engine.trainers.ppo.packing): each prompt once for its k responses, and no padding. The
        # policy's own log-probabilities and entropy came with the samples.
        for a, b in chunks_of_groups(prompt_ids, self.forward_batch_size):
            packed = pack_groups(prompt_ids[a:b], responses[a:b], device=targets.device)
            # the layers no role adapts run once for reference and value (and are kept for the update)
            bottom = roles.packed_bottom(packed)
            refs.append(roles.packed_logprobs(roles.reference, packed, targets[a:b], temp, bottom=bottom)[0])
            if use_value:  # rloo's and grpo's baselines are the other responses' rewards: no value to compute
                vals.append(roles.packed_values(packed, R, bottom=bottom).float())
            if bottom is not None:
                bottoms.append(packed.to_padded(bottom[0], P, R))
        logprobs, ref_logprobs = sampled.logprobs * mask, torch.cat(refs) * mask
        values = torch.cat(vals) * mask if use_value else torch.zeros_like(mask)
        entropy_tok = sampled.entropy
        score = self.reward(conversations, texts).to(mask.device)
        cost = self.cost(conversations, texts).to(mask.device) if self.cost is not None else torch.zeros_like(score)
        reward = self.shape_rewards(score, cost, sampled.finished, reduce)
        rewards = self.token_rewards(reward, logprobs, ref_logprobs, mask, kl_coef)
        kl = ((logprobs - ref_logprobs) * mask).sum(1)
        group = group.to(mask.device)
        if use_value:
            advantages, returns = gae(rewards, values, mask, self.gamma, self.lam)
        else:
            # the sequence's KL-penalised reward, which is what the per-token rewards add up to
            by_group = leave_one_out_advantages if self.advantage_estimator == "rloo" else group_normalized_advantages
            advantages = by_group(reward - kl_coef * kl, group, mask)
            returns = advantages  # no value learns them
        lengths = mask.sum(1).clamp_min(1.0)
        exp = Experience(
            sequences=sampled.sequences, attention_mask=sampled.attention_mask, response_mask=mask,
            logprobs=logprobs, ref_logprobs=ref_logprobs, values=values, rewards=rewards, advantages=advantages,
            returns=returns, score=score.float(), cost=cost.float(), reward=reward,
            kl=kl, entropy=(entropy_tok * mask).sum(1) / lengths,
            finished=sampled.finished, prompt_index=group, prompt_width=P,
            bottom=torch.cat(bottoms) if bottoms else None,
        )
        self.timings = {"sample_s": t_sampled - t0, "score_s": time.perf_counter() - t_sampled}
        return exp, texts

    def state_dict(self) -> dict[str, Any]:
        return {"moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.moments.load_state_dict(state["moments"])
