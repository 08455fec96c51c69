"""PPO settings the job reads beyond ``workbench.configs.PpoConfig``'s fields.

``PpoConfig`` (owned by the jobs' config module) carries the core settings; the ones below are read from it with
``getattr`` and these defaults, so they take effect as soon as the config class grows the same field names, and the
job works meanwhile. Every field has help text, like the config classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class PpoExtras:
    """PPO settings not (yet) in PpoConfig."""

    reward_base: str | None = _f(None, "Base model of a reward model trained on another base (its adapter then runs on "
                                 "its own copy of that base); none: the reward adapter shares the policy's base.")
    safety_model: str | None = _f(None, "Safety classifier: an adapter folder with a label head (a `train safety` "
                                  "run's output); none: no safety cost.")
    safety_weight: float = _f(1.0, "Weight of the safety cost subtracted from the reward (Safe-RLHF style).")
    reference_adapter: str | None = _f(None, "Adapter forming the frozen reference (none: adapter_from, else the bare "
                                       "base).")
    value_from_reward: bool = _f(False, "Start the value adapter and head from the reward model's (shared base only).")
    value_lr: float | None = _f(None, "Peak learning rate of the value adapter and head (none: lr). PPO codebases "
                                "often give the value several times the policy's: a value that lags leaves the "
                                "policy's advantages noisy.")
    critic_warmup_steps: int = _f(0, "PPO steps at the start that train only the value: the policy waits until the "
                                  "value predicts the returns (its advantages are noise before that).")
    normalize_reward: bool = _f(True, "Normalise scores by their running mean and spread before clipping.")
    reward_clip: float = _f(5.0, "Clip the (normalised) score to ±this (0: no clipping).")
    missing_eos_penalty: float = _f(1.0, "Subtracted from the reward of a response cut off before end-of-sequence.")
    whiten_advantages: bool | None = _f(None, "Whiten advantages over each rollout (zero mean, unit spread). None: yes with gae, no with rloo, whose "
                                       "leave-one-out advantages are centred already; whitening them would blow the KL "
                                       "noise of a rollout whose rewards all agree (a solved prompt) up to unit size.")
    samples_per_prompt: int = _f(1, "Responses sampled for each prompt of a rollout (a rollout holds "
                                 "rollout_batch_size x this).")
    advantage_estimator: str = _f("gae", "gae (a learned value and GAE) or rloo (leave-one-out baseline over the "
                                  "responses to the same prompt; no value is trained).")
    kl_horizon: float = _f(512.0, "Horizon (in responses) of the adaptive KL controller: each step moves the "
                           "coefficient by at most 20% x responses/horizon. 512 lets a run of 16-prompt rollouts "
                           "reach its target KL within tens of steps (the 10,000 of large-batch RLHF would take "
                           "hundreds).")
    min_kl_coef: float = _f(0.0, "The adaptive KL controller never lowers the coefficient below this (0: no floor). While KL sits "
                            "under target_kl early in a run the controller keeps shrinking the coefficient, and it then "
                            "climbs back too slowly to stop KL overshooting.")
    top_k: int = _f(0, "Sample among the k likeliest tokens in rollouts (0: no limit).")
    sample_every: int = _f(10, "Store sample responses in the project every N PPO steps (0: never).")
    samples_per_store: int = _f(4, "How many responses to store each time.")
    max_prompt_tokens: int | None = _f(None, "Longest prompt in tokens (none: max_length − max_new_tokens).")

    @classmethod
    def from_config(cls, cfg: Any) -> "PpoExtras":
        return cls(**{f.name: getattr(cfg, f.name, f.default) for f in fields(cls)})
