"""The ``ppo`` job run in-process on a tiny model with a rule reward: outputs, metrics, samples, exact resume,
cancel, bad input."""

from __future__ import annotations

import io
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from engine import checkpoints as ckpt
from engine.worker import run as run_worker
from tests.engine.sft_helpers import QUESTIONS
from workbench.configs import PpoConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.store import Project


@pytest.fixture(autouse=True)
def one_thread():
    # Several helpers share two cores: oversubscribed threads make a tiny model 10× slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def prompt_project(project_path):
    with Project.create(project_path) as p:
        for q, _ in QUESTIONS:
            p.add_prompt([{"role": "user", "content": q}], source="test")
        p.add_prompt([{"role": "user", "content": "A held-out question?"}], source="test", split="heldout")
    return project_path


def events_of(buf: io.StringIO) -> list[Event]:
    return [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]


def run_inprocess(project_path, cfg: PpoConfig, *, resume_run: int | None = None, stdout=None):
    client = JobClient(project_path)
    if resume_run is None:
        run_id, run_dir = client.prepare("ppo", cfg)
    else:
        run_id, run_dir = resume_run, client.attach(resume_run).run_dir
    buf = stdout or io.StringIO()
    code = run_worker(run_dir, resume=resume_run is not None, stdout=buf, own_process=False)
    return run_id, run_dir, code, events_of(buf)


def cfg_for(tiny, **kw) -> PpoConfig:
    base = dict(base_model=str(tiny), reward_model="rule:contains:e", batch_size=4, rollout_batch_size=8,
                ppo_epochs=2, max_new_tokens=6, max_steps=3, checkpoint_every=0, lr=1e-3, seed=3, lora_r=4,
                lora_alpha=8, lora_dropout=0.0, warmup_ratio=0.0, max_length=96)
    base.update(kw)
    return PpoConfig(**base)


def test_ppo_job_trains_streams_metrics_stores_samples_and_writes_a_loadable_adapter(tiny_model_dir, prompt_project):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = cfg_for(tiny_model_dir)
    run_id, run_dir, code, events = run_inprocess(prompt_project, cfg)
    assert code == 0, events[-1]
    assert events[-1].type.value == "done"
    streamed = {k for e in events if e.type.value == "metrics" for k in e.data}
    for key in ("rollout/score_mean", "rollout/score_std", "rollout/cost_mean", "rollout/kl", "rollout/entropy",
                "ppo/policy_loss", "ppo/value_loss", "ppo/clip_frac", "ppo/approx_kl", "ppo/explained_variance",
                "rollout/response_length", "perf/tokens_per_s", "perf/peak_mem_mb"):
        assert key in streamed, key
    out = run_dir / "adapter"
    weights = load_file(out / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    assert (run_dir / "value" / "head.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out)
    ids = torch.tensor([[1, 5, 6, 7]])
    with model.disable_adapter():
        plain = model(input_ids=ids).logits
    assert not torch.allclose(model(input_ids=ids).logits, plain)  # the policy moved away from the base
    assert PpoConfig.load(out / "config.yaml") == cfg
    card = (out / "README.md").read_text()
    assert "PPO" in card and "rule:contains:e" in card and "the bare base model" in card

    with Project.open(prompt_project) as p:
        run = p.get_run(run_id)
        assert run["status"] == "done"
        snap = next(s for s in p.snapshots() if s["id"] == run["snapshot_id"])
        assert snap["kind"] == "prompts" and snap["counts"] == {"prompt": len(QUESTIONS)}  # held-out prompt left out
        assert [s for s, _, _ in p.metrics(run_id, "rollout/kl")] == [1, 2, 3]
        rows = p.responses(source=f"ppo run {run_id}")
    assert rows and all(r.origin == "model" and r.adapter == str(out) and "ppo_step" in r.sampling for r in rows)


def test_critic_warm_up_and_value_lr_reach_the_job(tiny_model_dir, prompt_project):
    cfg = cfg_for(tiny_model_dir, max_steps=2, checkpoint_every=1, keep_checkpoints=2, critic_warmup_steps=1,
                  value_lr=5e-3)
    _, run_dir, code, events = run_inprocess(prompt_project, cfg)
    assert code == 0, events[-1]
    first = run_dir / "checkpoints" / "step-00000001"
    groups = torch.load(first / "optimizer.pt", weights_only=True)["param_groups"]
    assert [g["initial_lr"] for g in groups] == [1e-3, 5e-3]  # peaks; the schedule scales both alike
    # After the warm-up step the fresh policy adapter is untouched (LoRA B still zero); the value moved. The
    # second step trains the policy too.
    warm = load_file(first / "adapter" / "adapter_model.safetensors")
    assert all(not v.any() for k, v in warm.items() if "lora_B" in k)
    assert any(v.any() for k, v in load_file(first / "value" / "adapter_model.safetensors").items() if "lora_B" in k)
    final = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert any(v.any() for k, v in final.items() if "lora_B" in k)


def test_rloo_job_samples_each_prompt_several_times_and_trains_no_value(tiny_model_dir, prompt_project):
    cfg = cfg_for(tiny_model_dir, max_steps=2, rollout_batch_size=3, samples_per_prompt=2, advantage_estimator="rloo",
                  samples_per_store=6, sample_every=1)
    run_id, run_dir, code, events = run_inprocess(prompt_project, cfg)
    assert code == 0, events[-1]
    streamed = {k for e in events if e.type.value == "metrics" for k in e.data}
    assert {"ppo/policy_loss", "rollout/score_std_within_prompt"} <= streamed
    assert not streamed & {"ppo/value_loss", "ppo/explained_variance"}
    assert any("leave-one-out (rloo)" in e.data.get("message", "") for e in events if e.type.value == "log")
    assert any(v.any() for k, v in load_file(run_dir / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k)
    assert all(not v.any() for k, v in load_file(run_dir / "value" / "adapter_model.safetensors").items()
               if "lora_B" in k)  # the value was never trained
    with Project.open(prompt_project) as p:
        rows = [(r.prompt_id, r.sampling) for r in p.responses(source=f"ppo run {run_id}")]
    # a rollout of 3 prompts x 2 responses: what one step stores answers at most 3 prompts (identical responses to
    # a prompt are stored once, so a step may store fewer than 6)
    by_step: dict[int, list[int]] = {}
    for prompt_id, sampling in rows:
        by_step.setdefault(sampling["ppo_step"], []).append(prompt_id)
    assert sorted(by_step) == [1, 2]
    assert all(len(set(ids)) <= 3 < len(ids) for ids in by_step.values()), by_step


def test_the_kl_coefficient_floor_reaches_the_controller(tiny_model_dir, prompt_project):
    # KL stays far under a target of 50, so β shrinks by the most a step allows (20 % at horizon = rollout size):
    # 0.05, 0.04, then 0.032 without a floor; the floor holds it at 0.038
    cfg = cfg_for(tiny_model_dir, max_steps=3, kl_coef=0.05, target_kl=50.0, kl_horizon=8, min_kl_coef=0.038)
    run_id, _, code, events = run_inprocess(prompt_project, cfg)
    assert code == 0, events[-1]
    with Project.open(prompt_project) as p:
        used = [v for _, _, v in p.metrics(run_id, "rollout/kl_coef")]
    assert used == pytest.approx([0.05, 0.04, 0.038])


def test_rloo_with_one_response_per_prompt_is_refused_before_a_run_exists(tiny_model_dir, prompt_project):
    from workbench.errors import InputError

    with pytest.raises(InputError, match="needs samples_per_prompt of at least 2") as e:
        JobClient(prompt_project).prepare("ppo", cfg_for(tiny_model_dir, advantage_estimator="rloo"))
    assert e.value.field == "samples_per_prompt"
    with Project.open(prompt_project) as p:
        assert p.runs() == []


class CancelAtStep(io.StringIO):
    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def write(self, s: str) -> int:
        n = super().write(s)
        ev = Event.from_json(s)
        if ev.type.value == "progress" and ev.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
        return n


def test_ppo_resume_continues_exactly(tiny_model_dir, prompt_project):
    cfg = cfg_for(tiny_model_dir, max_steps=4, batch_size=2, grad_accum=2, temperature=0.9, top_p=0.95)
    full_id, _, code, _ = run_inprocess(prompt_project, cfg)
    assert code == 0
    with Project.open(prompt_project) as p:
        cfg = cfg.replace(snapshot_id=p.get_run(full_id)["snapshot_id"])

    part_id, run_dir, code, events = run_inprocess(prompt_project, cfg, stdout=CancelAtStep(2))
    assert code == 0 and events[-1].data["state"] == "cancelled"
    assert [c.name for c in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step-00000002"]
    _, _, code, events = run_inprocess(prompt_project, cfg, resume_run=part_id)
    assert code == 0 and events[-1].type.value == "done"
    with Project.open(prompt_project) as p:
        for key in ("ppo/policy_loss", "ppo/value_loss", "rollout/score_mean", "rollout/kl", "rollout/kl_coef"):
            full = [v for _, _, v in p.metrics(full_id, key)]
            resumed = [v for _, _, v in p.metrics(part_id, key)]
            assert len(full) == 4 and resumed == full, key  # bit for bit on CPU, sampling included


@pytest.mark.parametrize("field, value, expected", [
    ("reward_model", None, "needs a reward model"),
    ("reward_model", "/nonexistent/rm", "no such folder"),
    ("reward_model", "rule:bogus", "unknown rule reward"),
    ("min_examples", 100, "PPO needs at least 100"),
    ("adapter_from", "/nonexistent/sft", "adapter_from"),
])
def test_ppo_bad_input_fails_with_a_clear_reason(tiny_model_dir, prompt_project, field, value, expected):
    cfg = cfg_for(tiny_model_dir).replace(**{field: value}) if value is not None else cfg_for(tiny_model_dir, reward_model=None)
    run_id, _, code, events = run_inprocess(prompt_project, cfg)
    assert code == 1
    assert events[-1].type.value == "error" and expected in events[-1].data["message"]
    with Project.open(prompt_project) as p:
        assert p.get_run(run_id)["status"] == "failed"
        assert p.snapshots() == []  # nothing in the project changed


def test_ppo_on_a_4bit_base(tiny_model_dir, prompt_project):
    """QLoRA-style: the shared base in 4-bit NF4 (bitsandbytes runs it on the CPU too), the roles as LoRA adapters."""
    cfg = cfg_for(tiny_model_dir, quantize="4bit", max_steps=2)
    run_id, run_dir, code, events = run_inprocess(prompt_project, cfg)
    assert code == 0, events[-1]
    assert load_file(run_dir / "adapter" / "adapter_model.safetensors")
    with Project.open(prompt_project) as p:
        assert len(p.metrics(run_id, "ppo/policy_loss")) == 2
