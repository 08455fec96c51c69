"""PPO learns a rule-based reward on a tiny model within a few dozen steps while the KL stays bounded, with either
advantage estimator (gae, rloo, grpo).

Reward: +1 when the response contains the letter "e" (about one response in eight at the start). LoRA also on the
LM head, so the tiny random model's near-uniform output can move quickly; responses are 6 tokens.
"""

from __future__ import annotations

import io

import pytest
import torch

from engine.worker import run as run_worker
from workbench.configs import PpoConfig
from workbench.jobs import JobClient
from workbench.store import Project

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# 16 responses a rollout every way: 16 prompts once each with a learned value (GAE), or 4 prompts 4 times each
# with the leave-one-out baseline (rloo) or the group's mean and spread (grpo). At this learning rate one run is one
# trajectory: GAE's seed-0 draws happen to start with no reward at all and drift for a dozen steps (KL 15-20), while
# its seeds 1 and 2 learn within 10 steps, so the GAE case runs seed 1.
@pytest.mark.parametrize("estimator, prompts, per_prompt, seed", [("gae", 16, 1, 1), ("rloo", 4, 4, 0),
                                                                  ("grpo", 4, 4, 0)])
def test_policy_learns_a_rule_reward_with_bounded_kl(tiny_model_dir, project_path, estimator, prompts, per_prompt,
                                                     seed):
    with Project.create(project_path) as p:
        for i in range(16):
            p.add_prompt([{"role": "user", "content": f"Say something, number {i}."}], source="test")
    cfg = PpoConfig(base_model=str(tiny_model_dir), reward_model="rule:contains:e", lora_targets=TARGETS, lora_r=8,
                    lora_alpha=16, lora_dropout=0.0, lr=1e-2, warmup_ratio=0.0, min_lr_ratio=1.0, batch_size=16,
                    rollout_batch_size=prompts, samples_per_prompt=per_prompt, advantage_estimator=estimator,
                    ppo_epochs=4, max_new_tokens=6, max_steps=30, kl_coef=0.02,
                    target_kl=4.0, value_coef=0.5, checkpoint_every=0, seed=seed, max_length=64)
    client = JobClient(project_path)
    run_id, run_dir = client.prepare("ppo", cfg)
    assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0
    with Project.open(project_path) as p:
        score = [v for _, _, v in p.metrics(run_id, "rollout/score_mean")]
        kl = [v for _, _, v in p.metrics(run_id, "rollout/kl")]
    assert len(score) == 30
    assert sum(score[:3]) / 3 < 0.4
    assert sum(score[-10:]) / 10 > 0.8, score
    assert max(kl) < 10.0, kl  # nats per response
