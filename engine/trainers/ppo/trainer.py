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

import math
from collections import defaultdict
from collections.abc import Callable

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
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
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
        # Several processes (each with its share of the rollout): a sum over them. The advantages are whitened with
        # every process's moments, each loss is weighted by its share of the whole mini-batch's tokens, and the
        # gradients are summed before clipping, so an update is the one a single process would make.
        self.reduce = reduce

    def step(self, exp: Experience, generator: torch.Generator, train_policy: bool = True) -> dict[str, float]:
        """PPO epochs over ``exp``; returns averaged metrics (``ppo/…``). ``generator`` shuffles the mini-batches.
        ``train_policy=False`` (a critic warm-up step) trains the value only: the policy runs no forward and gets no
        gradient, so the optimizer leaves it as it is (and the step reports no policy metrics)."""
        mask = exp.response_mask
        if self.whiten_advantages:
            exp.advantages = whiten(exp.advantages, mask, reduce=self.reduce)
        sums: dict[str, float] = defaultdict(float)
        n = 0
        B = exp.batch_size
        for _ in range(self.ppo_epochs):
            perm = torch.randperm(B, generator=generator)
            for start in range(0, B, self.mini_batch_size):
                mini = perm[start : start + self.mini_batch_size]
                tokens = exp.response_mask[mini].sum().double()
                tokens = float((self.reduce(tokens) if self.reduce is not None else tokens).clamp_min(1.0))
                for chunk in self.chunks(exp, mini):
                    micro = exp.select(chunk)
                    share = float(micro.response_mask.sum()) / tokens
                    stats = self._micro_step(micro, share, train_policy)
                    for k, v in stats.items():
                        sums[k] += v * share
                if self.reduce is not None:
                    self._sum_gradients()
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
        if self.reduce is not None:
            # the token-weighted losses are each process's part of the whole's; the gradient norms are already shared
            shared = sorted(k for k in sums if not k.startswith("ppo/grad_norm"))
            totals = self.reduce(torch.tensor([sums[k] for k in shared], dtype=torch.float64)).tolist()
            sums.update(zip(shared, totals))
        out = {k: v / max(1, n) for k, v in sums.items()}
        if self.train_value:
            out["ppo/explained_variance"] = explained_variance(exp.values, exp.returns, mask, reduce=self.reduce)
        out["ppo/updates"] = float(n)
        return out

    def _sum_gradients(self) -> None:
        """Every trained parameter's gradient summed over the processes (one flat buffer, one collective call)."""
        params = [p for p in self.policy_params + self.value_params if p.grad is not None]
        if not params:
            return
        flat = self.reduce(torch.cat([p.grad.reshape(-1) for p in params]))
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

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


def rollout_metrics(exp: Experience, texts: list[str], kl_coef: float,
                    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """What a rollout looked like: reward, cost, KL, entropy, length (``rollout/…``); with ``reduce`` (a sum over
    processes) the rollout of every process. Spreads are Bessel-corrected standard deviations."""
    rows = {
        "score": exp.score.double(), "reward": exp.reward.double(), "cost": exp.cost.double(), "kl": exp.kl.double(),
        "entropy": exp.entropy.double(), "response_length": exp.response_length.double(),
        "truncated_frac": (~exp.finished).double(),
        "empty_frac": torch.tensor([0.0 if t.strip() else 1.0 for t in texts], dtype=torch.float64),
    }
    # With several responses per prompt: the score's spread among the responses to one prompt (what a group
    # baseline leaves for the policy to learn from, against rollout/score_std over the rollout), averaged over
    # prompts. A prompt's responses are always in one process.
    groups = [exp.score[exp.prompt_index == g].double() for g in torch.unique(exp.prompt_index)]
    groups = [g for g in groups if g.numel() > 1]
    names = list(rows)
    sums = torch.stack([torch.tensor(float(exp.batch_size), dtype=torch.float64),
                        *[v.sum() for v in rows.values()],
                        (rows["score"] ** 2).sum(), (rows["reward"] ** 2).sum(),
                        torch.tensor(float(len(groups)), dtype=torch.float64),
                        torch.stack([g.std() for g in groups]).sum() if groups else torch.zeros((), dtype=torch.float64)])
    if reduce is not None:
        sums = reduce(sums)
    n, *totals = sums.tolist()
    means = dict(zip(names, totals[: len(names)]))
    score_sq, reward_sq, n_groups, group_std = totals[len(names):]

    def spread(total: float, squares: float) -> float:
        return math.sqrt(max(0.0, squares - total * total / n) / (n - 1)) if n > 1 else 0.0

    out = {f"rollout/{k}": v / n for k, v in means.items() if k not in ("score", "reward", "cost")}
    out.update({
        "rollout/score_mean": means["score"] / n, "rollout/score_std": spread(means["score"], score_sq),
        "rollout/reward_mean": means["reward"] / n, "rollout/reward_std": spread(means["reward"], reward_sq),
        "rollout/cost_mean": means["cost"] / n, "rollout/kl_coef": float(kl_coef),
    })
    if n_groups:
        out["rollout/score_std_within_prompt"] = group_std / n_groups
    return out
