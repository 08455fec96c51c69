"""Every training stage under ``accelerate launch`` with 2 CPU processes gives the losses (and eval metrics) of one
process with the same global batch (gradient accumulation over the same examples); PPO's rollout is the same too."""

from __future__ import annotations

import io

import pytest

from engine.reward_model import HEAD_FILE
from engine.worker import run as run_worker
from tests.engine.sft_helpers import add_demonstrations
from tests.engine.test_rm_job import add_preferences
from workbench.configs import DpoConfig, RewardConfig, SftConfig
from workbench.jobs import JobClient
from workbench.store import Project


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_accumulation(tiny_model_dir, project_path):
    with Project.create(project_path) as p:
        add_demonstrations(p)
    common = dict(base_model=str(tiny_model_dir), batch_size=2, lr=5e-3, max_steps=4, checkpoint_every=2,
                  eval_fraction=0.2, lora_r=4, lora_alpha=8, lora_dropout=0.0, num_threads=1, seed=3)
    client = JobClient(project_path)
    handle = client.start("sft", SftConfig(**common, num_processes=2))
    events = list(handle.events())
    assert handle.status == "done", events[-1]
    assert any("2 process(es)" in e.data.get("message", "") for e in events if e.type.value == "log")
    with Project.open(project_path) as p:
        sid = p.get_run(handle.run_id)["snapshot_id"]

    # the same global batch in one process: 2 micro-batches of 2, accumulated
    run_id, run_dir = client.prepare("sft", SftConfig(**common, grad_accum=2, snapshot_id=sid))
    assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0
    with Project.open(project_path) as p:
        two = [v for _, _, v in p.metrics(handle.run_id, "train/loss")]
        one = [v for _, _, v in p.metrics(run_id, "train/loss")]
        two_eval = [v for _, _, v in p.metrics(handle.run_id, "eval/loss")]
        one_eval = [v for _, _, v in p.metrics(run_id, "eval/loss")]
    assert len(two) == 4
    assert two == pytest.approx(one, rel=1e-4)
    assert two_eval == pytest.approx(one_eval, rel=1e-4)
    assert (handle.run_dir / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_reward_model_two_cpu_processes_match_one_process_with_accumulation(tiny_model_dir, project_path):
    with Project.create(project_path) as p:
        add_preferences(p, heldout=4)  # 12 training pairs (the 4 held-out prompts never enter the snapshot)
    # 9 training pairs, 3 eval pairs; a step is 4 pairs: 2 processes × 2, or 1 process × 2 micro-batches of 2.
    # The eval set (3 pairs) does not divide evenly between the processes: the sums must still be those of one.
    common = dict(base_model=str(tiny_model_dir), batch_size=2, lr=5e-3, max_steps=4, checkpoint_every=2,
                  eval_fraction=0.25, warmup_ratio=0.0, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_length=96,
                  num_threads=1, seed=3)
    client = JobClient(project_path)
    handle = client.start("rm", RewardConfig(**common, num_processes=2))
    events = list(handle.events())
    assert handle.status == "done", events[-1]
    assert any("2 process(es)" in e.data.get("message", "") for e in events if e.type.value == "log")
    with Project.open(project_path) as p:
        sid = p.get_run(handle.run_id)["snapshot_id"]

    run_id, run_dir = client.prepare("rm", RewardConfig(**common, grad_accum=2, snapshot_id=sid))
    assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0

    def series(p: Project, rid: int, key: str) -> list[float]:
        return [v for _, _, v in p.metrics(rid, key)]

    with Project.open(project_path) as p:
        assert p.get_run(run_id)["snapshot_id"] == sid
        two, one = series(p, handle.run_id, "train/loss"), series(p, run_id, "train/loss")
        assert len(two) == 4
        assert two == pytest.approx(one, rel=1e-4)
        assert series(p, handle.run_id, "train/accuracy") == series(p, run_id, "train/accuracy")
        for key in ("eval/loss", "eval/accuracy", "eval/pairs", "eval/margin"):
            got, want = series(p, handle.run_id, key), series(p, run_id, key)
            assert got and got == pytest.approx(want, rel=1e-4, abs=1e-6), key
        assert series(p, run_id, "eval/pairs")[-1] == 3
    out = handle.run_dir / "adapter"
    assert (out / "adapter_model.safetensors").is_file() and (out / HEAD_FILE).is_file()


@pytest.mark.slow
def test_dpo_two_cpu_processes_match_one_process_with_accumulation(tiny_model_dir, project_path):
    """DPO under accelerate: each process scores its share of the reference pass and of every evaluation, and the
    sums give each process all of them; the losses, the eval metrics and the held-out accuracy equal one process's
    with the same global batch."""
    with Project.create(project_path) as p:
        add_preferences(p, heldout=4)
    common = dict(base_model=str(tiny_model_dir), batch_size=2, lr=5e-3, max_steps=4, checkpoint_every=2,
                  eval_fraction=0.25, warmup_ratio=0.0, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_length=96,
                  num_threads=1, seed=3)
    client = JobClient(project_path)
    handle = client.start("dpo", DpoConfig(**common, num_processes=2))
    events = list(handle.events())
    assert handle.status == "done", events[-1]
    assert any("2 process(es)" in e.data.get("message", "") for e in events if e.type.value == "log")
    with Project.open(project_path) as p:
        sid = p.get_run(handle.run_id)["snapshot_id"]

    run_id, run_dir = client.prepare("dpo", DpoConfig(**common, grad_accum=2, snapshot_id=sid))
    assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0

    def series(p: Project, rid: int, key: str) -> list[float]:
        return [v for _, _, v in p.metrics(rid, key)]

    with Project.open(project_path) as p:
        two, one = series(p, handle.run_id, "train/loss"), series(p, run_id, "train/loss")
        assert len(two) == 4 and two == pytest.approx(one, rel=1e-4)
        for key in ("rewards/accuracy", "eval/loss", "eval/accuracy", "heldout/accuracy", "heldout/ties",
                    "heldout/margin"):
            got, want = series(p, handle.run_id, key), series(p, run_id, key)
            assert got and got == pytest.approx(want, rel=1e-4, abs=1e-6), key
        assert series(p, run_id, "heldout/ties")[0] == series(p, run_id, "heldout/pairs")[0]  # step 0: all ties
    assert (handle.run_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("estimator, per_prompt", [("rloo", 2), ("gae", 1)])
def test_ppo_two_cpu_processes_sample_and_train_as_one_process(tiny_model_dir, tmp_path, estimator, per_prompt):
    """PPO under accelerate: each process samples its half of a step's prompts with seeds per (prompt, sample), so
    the two-process rollout is the one-process rollout; the reward normaliser, the whitening, the token weights and
    the summed gradients see the whole rollout, so the first update's loss is one process's at the same global
    batch."""
    from workbench.configs import PpoConfig

    def project(name: str):
        path = tmp_path / name
        with Project.create(path) as p:
            for i in range(8):
                p.add_prompt([{"role": "user", "content": f"Say something, number {i}."}], source="test")
        return path

    rows = 4 * per_prompt  # 4 prompts a step: 2 per process
    common = dict(base_model=str(tiny_model_dir), reward_model="rule:contains:e", lora_r=4, lora_alpha=8,
                  lora_dropout=0.0, lr=1e-2, warmup_ratio=0.0, rollout_batch_size=4, samples_per_prompt=per_prompt,
                  advantage_estimator=estimator, ppo_epochs=1, max_new_tokens=6, max_length=64, max_steps=2,
                  checkpoint_every=0, sample_every=1, samples_per_store=rows // 2, seed=4, num_threads=1,
                  batch_size=rows // 2)
    two_path, one_path = project("two.wbp"), project("one.wbp")
    handle = JobClient(two_path).start("ppo", PpoConfig(**common, num_processes=2))
    events = list(handle.events())
    assert handle.status == "done", events[-1]
    assert any("2 process(es)" in e.data.get("message", "") for e in events if e.type.value == "log")
    run_id, run_dir = JobClient(one_path).prepare("ppo", PpoConfig(**common, grad_accum=2))
    assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0

    def first_step(path, rid):
        with Project.open(path) as p:
            metrics = {k: v for s, k, v in p.metrics(rid) if s == 1}
            stored = [(r.prompt_id, r.content) for r in p.responses(source=f"ppo run {rid}")
                      if r.sampling["ppo_step"] == 1]
        return metrics, stored

    (two, two_stored), (one, one_stored) = first_step(two_path, handle.run_id), first_step(one_path, run_id)
    # the main process stores the first responses of its share, which are the single process's first responses
    assert two_stored and two_stored == one_stored
    for key in ("rollout/score_mean", "rollout/score_std", "rollout/kl", "rollout/response_length",
                "rollout/entropy", "train/loss", "ppo/policy_loss", "ppo/grad_norm_policy", "train/tokens"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
    if estimator == "gae":
        assert two["ppo/value_loss"] == pytest.approx(one["ppo/value_loss"], rel=1e-4, abs=1e-6)
    assert (handle.run_dir / "adapter" / "adapter_model.safetensors").is_file()
