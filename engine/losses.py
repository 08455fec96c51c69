"""The losses and small numeric pieces of reward modelling, PPO and DPO: pure functions (and one tiny class) on tensors.

Nothing here knows about models, tokenizers or the project file, so every piece is tested against hand-computed
values on hand-made tensors (tests/engine/test_losses.py).

Shapes: ``B`` = batch (pairs, or sequences), ``T`` = response tokens. Masks are 1 on real tokens, 0 on padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Default margins after Llama 2's small margins (same table as workbench.taxonomy.DEFAULT_STRENGTH_MARGIN,
# restated here so a config can override it without the engine reaching into the taxonomy's dict).
DEFAULT_MARGINS: dict[str | None, float] = {"slight": 1 / 3, "clear": 2 / 3, "strong": 1.0, None: 0.0}


def strength_margin(strength: str | None, margins: Mapping[str | None, float] | None = None) -> float:
    """The Bradley–Terry margin for a judgment's strength (``None`` — no strength given — is 0 by default)."""
    table = DEFAULT_MARGINS if margins is None else margins
    return float(table.get(strength, table.get(None, 0.0)))


# ---------------------------------------------------------------------------------------------------- reward model
@dataclass
class BTOutput:
    """The reward-model loss and its parts (each a scalar tensor; ``loss`` is what gets back-propagated)."""

    loss: Tensor
    bt_loss: Tensor
    centring_loss: Tensor


def bradley_terry_loss(
    r_chosen: Tensor,
    r_rejected: Tensor,
    margin: Tensor | None = None,
    tie: Tensor | None = None,
    weight: Tensor | None = None,
    centring_coef: float = 0.0,
) -> BTOutput:
    """Bradley–Terry loss ``-log σ(r_c − r_r − m)`` averaged over pairs, with ties as 0.5 targets.

    r_chosen, r_rejected: [B] rewards. margin: [B] (0 where absent). tie: [B] bool, True where the pair is a tie:
    its target probability is 0.5 and its margin is ignored, i.e. ``−½ log σ(d) − ½ log σ(−d)`` with ``d = r_c − r_r``,
    whose minimum is at d = 0. weight: [B] optional per-pair weights (the mean is weighted).
    centring_coef: the reward-centring auxiliary term ``coef · mean((r_c + r_r)²)`` (Eisenstein et al. 2023), which
    pins the reward's free offset near zero so rewards stay comparable across runs and usable by PPO.
    """
    diff = r_chosen - r_rejected
    target = torch.ones_like(diff)
    if margin is not None:
        m = margin.to(diff.dtype)
        if tie is not None:
            m = torch.where(tie, torch.zeros_like(m), m)
        diff = diff - m
    if tie is not None:
        target = torch.where(tie, torch.full_like(target, 0.5), target)
    # BCE with logits and target t is −t·log σ(d) − (1−t)·log σ(−d): exactly −log σ(d) when t = 1.
    per_pair = F.binary_cross_entropy_with_logits(diff, target, reduction="none")
    if weight is not None:
        w = weight.to(per_pair.dtype)
        bt = (per_pair * w).sum() / w.sum().clamp_min(1e-12)
    else:
        bt = per_pair.mean()
    centring = ((r_chosen + r_rejected) ** 2).mean()
    loss = bt + centring_coef * centring if centring_coef else bt
    return BTOutput(loss=loss, bt_loss=bt.detach(), centring_loss=centring.detach())


def pairwise_accuracy(r_chosen: Tensor, r_rejected: Tensor, tie: Tensor | None = None) -> tuple[int, int]:
    """(correct, counted) over the non-tie pairs: correct when the chosen response got the strictly higher reward."""
    keep = torch.ones_like(r_chosen, dtype=torch.bool) if tie is None else ~tie
    correct = ((r_chosen > r_rejected) & keep).sum().item()
    return int(correct), int(keep.sum().item())


# ---------------------------------------------------------------------------------------------------- classifier
def masked_bce_with_logits(logits: Tensor, labels: Tensor, known: Tensor) -> Tensor:
    """Multi-label binary cross-entropy over the known labels only.

    logits, labels, known: [B, C]. ``known`` is 1 where the label was observed (a flag present, or checked and absent)
    and 0 where nobody said: those cells contribute nothing, not a silent "absent". The mean is over known cells;
    with no known cell at all the loss is 0 (and still connected to the graph, so backward() works).
    """
    k = known.to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return (per * k).sum() / k.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------- PPO pieces
def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the cells where ``mask`` is 1 (all of them, or along ``dim``)."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(1.0)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over the masked cells (Bessel-corrected by default, as PPO implementations whiten with)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum().to(x.dtype)
        if n > 1:
            var = var * n / (n - 1)
    return var


def summed_moments(x: Tensor, mask: Tensor, reduce) -> tuple[Tensor, Tensor]:
    """Mean and Bessel-corrected variance of ``x`` over the masked cells of every process: the sums (count, Σx, Σx²,
    in float64) go through ``reduce``, a sum over the processes of a distributed run."""
    m = mask.to(torch.float64)
    xd = x.to(torch.float64) * m
    n, s1, s2 = reduce(torch.stack([m.sum(), xd.sum(), (xd * x.to(torch.float64)).sum()])).tolist()
    mean = s1 / max(n, 1.0)
    var = max(0.0, s2 / max(n, 1.0) - mean * mean) * (n / (n - 1) if n > 1 else 1.0)
    return x.new_tensor(mean), x.new_tensor(var)


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce=None) -> Tensor:
    """Normalise ``x`` to unit variance over the masked cells (and zero mean unless ``shift_mean`` is False);
    padding cells come back as 0. With ``reduce`` (a sum over processes) the moments are those of every process's
    cells."""
    mean, var = summed_moments(x, mask, reduce) if reduce is not None else (masked_mean(x, mask), masked_var(x, mask))
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens.

    rewards, values, mask: [B, T]; ``mask`` is 1 on response tokens, which are a prefix of each row (right padding).
    The value after the last real token is 0 (the episode ends there). Returns (advantages, returns), both [B, T],
    0 on padding; returns = advantages + values.

        δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t,     A_t = δ_t + γλ·m_{t+1}·A_{t+1}
    """
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        next_m = m[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v * next_m - values[:, t]
        last = delta + gamma * lam * next_m * last
        adv[:, t] = last
    adv = adv * m
    return adv, (adv + values) * m


def leave_one_out_advantages(reward: Tensor, group: Tensor, mask: Tensor) -> Tensor:
    """RLOO advantages: each response's sequence reward minus the mean reward of the *other* responses to the same
    prompt, put on every one of its response tokens.

    reward: [B] sequence rewards; group: [B] long, which prompt each row answers (every group needs at least two
    rows); mask: [B, T]. Returns [B, T], 0 on padding.

        A_i = r_i − (Σ_{j in g(i)} r_j − r_i) / (k_g − 1)

    The baseline removes the share of the reward that comes from the prompt (one prompt is easy to answer well,
    another hard), which is most of the spread when a reward model scores short samples, without learning a value.
    """
    reward = reward.float()
    groups, inverse = torch.unique(group, return_inverse=True)
    sums = torch.zeros(len(groups), dtype=reward.dtype, device=reward.device).index_add_(0, inverse, reward)
    counts = torch.zeros(len(groups), dtype=reward.dtype, device=reward.device).index_add_(
        0, inverse, torch.ones_like(reward))
    if bool((counts < 2).any()):
        raise ValueError("leave-one-out advantages need at least two responses per prompt")
    k = counts[inverse]
    baseline = (sums[inverse] - reward) / (k - 1)
    return (reward - baseline).unsqueeze(1) * mask.to(reward.dtype)


GROUP_STD_EPS = 1e-4  # as TRL's GRPO: keeps a group whose rewards all agree at advantage 0, not 0/0


def group_normalized_advantages(reward: Tensor, group: Tensor, mask: Tensor, eps: float = GROUP_STD_EPS) -> Tensor:
    """GRPO advantages: each response's sequence reward minus the mean reward of its prompt's group (itself
    included), divided by the group's Bessel-corrected standard deviation plus ``eps``, on every one of its tokens.

    reward: [B]; group: [B] long (every group needs at least two rows); mask: [B, T]. Returns [B, T], 0 on padding.

        A_i = (r_i − mean_g) / (std_g + eps),   std_g = sqrt(Σ_{j in g} (r_j − mean_g)² / (k_g − 1))

    Against leave-one-out the centring differs only by the factor k/(k−1) (r_i − mean_g = (k−1)/k · (r_i − mean of
    the others)); the division puts every prompt's spread on one scale, so a prompt whose answers differ a little
    weighs as much as one whose answers differ a lot.
    """
    reward = reward.float()
    groups, inverse = torch.unique(group, return_inverse=True)
    counts = torch.zeros(len(groups), dtype=reward.dtype, device=reward.device).index_add_(
        0, inverse, torch.ones_like(reward))
    if bool((counts < 2).any()):
        raise ValueError("group-normalised advantages need at least two responses per prompt")
    mean = torch.zeros_like(counts).index_add_(0, inverse, reward) / counts
    centred = reward - mean[inverse]
    var = torch.zeros_like(counts).index_add_(0, inverse, centred * centred) / (counts - 1)
    return (centred / (var.sqrt()[inverse] + eps)).unsqueeze(1) * mask.to(reward.dtype)


@dataclass
class PolicyLossOutput:
    loss: Tensor
    clip_frac: Tensor
    approx_kl: Tensor


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float = 0.2
) -> PolicyLossOutput:
    """PPO's clipped surrogate: mean over response tokens of ``max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))``, ρ = exp(logπ − logπ_old).

    All inputs [B, T]. clip_frac: share of tokens where the clipped branch was taken. approx_kl: the
    ``½·mean((logπ − logπ_old)²)`` estimator (as in OpenRLHF/TRL's old PPO trainer) for monitoring.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLossOutput(loss=loss, clip_frac=clip_frac, approx_kl=approx_kl)


@dataclass
class ValueLossOutput:
    loss: Tensor
    clip_frac: Tensor


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float = 0.2
) -> ValueLossOutput:
    """PPO's clipped value loss: ``½·mean(max((V − R)², (V_old + clip(V − V_old, ±c) − R)²))`` over response tokens.

    All inputs [B, T]. clip_frac: share of tokens where the clipped error was the larger one.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((err_clipped > err).to(values.dtype), mask)
    return ValueLossOutput(loss=loss, clip_frac=clip_frac)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor, reduce=None) -> float:
    """1 − Var(R − V)/Var(R) over the masked cells (of every process, with ``reduce``): 1 is a perfect value
    function, ≤ 0 no better than a constant."""
    if reduce is not None:
        var_r, var_d = summed_moments(returns, mask, reduce)[1], summed_moments(returns - values, mask, reduce)[1]
    else:
        var_r, var_d = masked_var(returns, mask), masked_var(returns - values, mask)
    if var_r <= 0:
        return float("nan")
    return float(1.0 - var_d / var_r)


class FixedKLController:
    """A constant KL coefficient (same interface as the adaptive one)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. (2019): moves β so the measured KL tracks a target.

        e = clip(KL / target − 1, −0.2, 0.2),     β ← β · (1 + e · n_steps / horizon)

    ``n_steps`` is the number of samples (episodes) the KL was measured over since the last update. β never goes
    below ``floor``: early in a run the KL sits under its target for many steps and the multiplicative rule keeps
    shrinking β (0.1 → 0.01 over 35 steps in a PPO quality benchmark), and climbing back at most 20 % x n/horizon
    a step takes as long, so KL overshoots the target in between.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float, floor: float = 0.0):
        if target <= 0 or horizon <= 0:
            raise ValueError("target KL and horizon must be positive")
        if floor < 0:
            raise ValueError("the KL coefficient's floor cannot be negative")
        self.value = max(float(init_kl_coef), float(floor))
        self.target = float(target)
        self.horizon = float(horizon)
        self.floor = float(floor)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value = max(self.floor, self.value * (1.0 + error * n_steps / self.horizon))

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon, "floor": self.floor}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), float(state["horizon"])
        self.floor = float(state.get("floor", 0.0))  # checkpoints from before the floor existed had none


# ---------------------------------------------------------------------------------------------------- DPO
@dataclass
class DPOOutput:
    """Per-pair losses [B] and implicit rewards β·(logπ − logπ_ref) of chosen and rejected [B] (detached)."""

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    margin: Tensor | None = None,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023) losses from sequence log-probabilities, all [B].

    h = (logπ_c − logπ_ref_c) − (logπ_r − logπ_ref_r).
    sigmoid: ``−log σ(β·h − m)`` (with label smoothing ε: ``−(1−ε)·log σ(β·h − m) − ε·log σ(−(β·h − m))``);
        the margin m (e.g. from the judgment's strength) is subtracted like the reward model's.
    ipo: ``(h − 1/(2β))²`` — IPO is meant for *average* per-token log-probabilities; the caller passes those.
    """
    h = (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        z = beta * h
        if margin is not None:
            z = z - margin.to(z.dtype)
        losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss type {loss_type!r} (use 'sigmoid' or 'ipo')")
    chosen_rewards = (beta * (policy_chosen_logps - ref_chosen_logps)).detach()
    rejected_rewards = (beta * (policy_rejected_logps - ref_rejected_logps)).detach()
    return DPOOutput(losses=losses, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
