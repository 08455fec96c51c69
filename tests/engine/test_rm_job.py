"""The ``rm`` and ``eval`` jobs run in-process on a tiny model: output, metrics, exact resume, bad input."""

from __future__ import annotations

import io

import pytest
import torch

from engine.jobs.eval import evaluate_reward_model
from engine.reward_model import HEAD_FILE, read_head_meta
from engine.rm_data import margin_table
from engine.worker import run as run_worker
from workbench.configs import RewardConfig
from workbench.evaluation import wilson_interval
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.store import Project

TOPICS = ["the weather", "a recipe", "my homework", "a good book", "the train times", "a birthday gift",
          "learning French", "fixing a bike", "a job interview", "saving money", "a garden", "a headache",
          "a poem", "the news", "a movie", "a puzzle"]


@pytest.fixture(autouse=True)
def one_thread():
    # Two tiny-model threads on a busy 2-core machine spin against each other; one is several times faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def add_preferences(project: Project, n: int = len(TOPICS), *, heldout: int = 0) -> None:
    strengths = [None, "slight", "clear", "strong"]
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        split = "heldout" if i >= n - heldout else "train"
        pid, _ = project.add_prompt([{"role": "user", "content": f"Can you help me with {topic}?"}], split=split)
        good, _ = project.add_response(pid, f"Of course! Here is some help with {topic}, step by step.")
        bad, _ = project.add_response(pid, "No.")
        a, b, verdict = (good, bad, "a") if i % 2 else (bad, good, "b")
        project.add_comparison(pid, a, b, verdict=verdict, strength=strengths[i % 4])
    # a tie and a retest, which stay out by default
    pid, _ = project.add_prompt([{"role": "user", "content": "Say hi."}])
    r1, _ = project.add_response(pid, "Hi!")
    r2, _ = project.add_response(pid, "Hello!")
    cid = project.add_comparison(pid, r1, r2, verdict="tie")
    project.judge(project.add_retest(cid), "a", strength="slight")


@pytest.fixture
def rm_project(project_path):
    with Project.create(project_path) as p:
        add_preferences(p, heldout=4)
    return project_path


def events_of(buf: io.StringIO) -> list[Event]:
    return [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]


def run_inprocess(project_path, cfg, *, stage="rm", resume_run=None):
    client = JobClient(project_path)
    if resume_run is None:
        run_id, run_dir = client.prepare(stage, cfg)
    else:
        run_id, run_dir = resume_run, client.attach(resume_run).run_dir
    buf = io.StringIO()
    code = run_worker(run_dir, resume=resume_run is not None, stdout=buf, own_process=False)
    return run_id, run_dir, code, events_of(buf)


def cfg_for(tiny, **kw) -> RewardConfig:
    base = dict(base_model=str(tiny), batch_size=4, lr=5e-3, max_steps=6, checkpoint_every=3, eval_fraction=0.25,
                warmup_ratio=0.0, seed=3, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_length=96)
    base.update(kw)
    return RewardConfig(**base)


def test_wilson_interval_and_margin_table():
    # 60 of 100: p = 0.6, z = 1.96 -> centre 0.5922, half-width 0.0944 -> (0.5020, 0.6906)
    low, high = wilson_interval(60, 100)
    assert low == pytest.approx(0.5020, abs=1e-3) and high == pytest.approx(0.6906, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0
    assert margin_table({"none": 0.0, "slight": 0.5})[None] == 0.0 and margin_table({"slight": 0.5})["slight"] == 0.5


def test_rm_job_trains_writes_adapter_head_and_metrics(tiny_model_dir, rm_project, tmp_path):
    run_id, run_dir, code, events = run_inprocess(rm_project, cfg_for(tiny_model_dir))
    errors = [e for e in events if e.type.value == "error"]
    assert code == 0, errors
    done = [e for e in events if e.type.value == "done"][-1]
    out = run_dir / "adapter"
    assert (out / "adapter_model.safetensors").is_file() and (out / HEAD_FILE).is_file()
    assert (out / "README.md").is_file() and (out / "config.yaml").is_file()
    assert read_head_meta(out)["kind"] == "reward"
    fm = done.data["final_metrics"]
    for key in ("train/loss", "train/accuracy", "train/reward_mean", "train/reward_std", "train/margin",
                "eval/accuracy", "eval/loss", "eval/accuracy_low", "eval/reward_std"):
        assert key in fm, key
    with Project.open(rm_project) as p:
        run = p.get_run(run_id)
        assert run["status"] == "done" and run["snapshot_id"] is not None
        assert p.metrics(run_id, "train/loss")
        # the tie and the retest stayed out of the snapshot
        from workbench.training_data import preference_pairs

        pairs = preference_pairs(p, run["snapshot_id"])
        assert len(pairs) == 12 and not any(pp.tie for pp in pairs)
        # eval rm: accuracy on the held-out prompts' judgments with the trained adapter
        res = evaluate_reward_model(p, out, batch_size=4, max_length=96, device="cpu")
        assert res["pairs"] == 4 and 0.0 <= res["accuracy_low"] <= res["accuracy"] <= res["accuracy_high"] <= 1.0
    # the same through the worker: the ``eval`` stage that ``workbench eval rm`` starts
    from workbench.configs import EvalConfig

    _, _, code, events = run_inprocess(rm_project, EvalConfig(adapter_from=str(out), batch_size=4, max_length=96,
                                                              snapshot_id=int(res["snapshot_id"]), device="cpu"),
                                       stage="eval")
    assert code == 0, [e.data for e in events if e.type.value == "error"]
    final = [e for e in events if e.type.value == "done"][-1].data["final_metrics"]
    assert final["eval/accuracy"] == pytest.approx(res["accuracy"]) and final["eval/pairs"] == 4


def losses_of(events) -> dict[int, float]:
    return {e.step: e.data["train/loss"] for e in events if e.type.value == "metrics" and "train/loss" in e.data}


def test_rm_job_resume_continues_exactly(tiny_model_dir, rm_project):
    from engine import checkpoints as ckpt

    run_id, run_dir, code, events = run_inprocess(rm_project, cfg_for(tiny_model_dir, max_steps=6, checkpoint_every=3))
    assert code == 0
    full = losses_of(events)
    assert [c.name for c in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step-00000003"]
    # resume from the step-3 checkpoint: steps 4..6 must repeat the uninterrupted run's losses
    _, _, code, resumed = run_inprocess(rm_project, None, resume_run=run_id)
    assert code == 0
    after = losses_of(resumed)
    assert sorted(after) == [4, 5, 6]
    for s in (4, 5, 6):
        assert after[s] == pytest.approx(full[s], rel=1e-5, abs=1e-6)


def test_rm_job_refuses_too_few_pairs_and_leaves_the_project_alone(tiny_model_dir, project_path):
    with Project.create(project_path) as p:
        add_preferences(p, n=2)
    run_id, _, code, events = run_inprocess(project_path, cfg_for(tiny_model_dir, min_examples=4))
    assert code == 1
    err = [e for e in events if e.type.value == "error"][-1]
    assert "2 judged preference pair(s)" in err.data["message"]
    with Project.open(project_path) as p:
        assert p.snapshots() == []
        assert p.get_run(run_id)["status"] == "failed"


def test_lora_top_layers_adapts_only_the_top_of_the_model(tiny_model_dir, rm_project):
    """``lora_top_layers`` puts adapters on the top N layers only: the trained adapter holds weights for those layers
    alone, and they changed from their initial zeros (LoRA B starts at zero)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    n_layers = AutoConfig.from_pretrained(tiny_model_dir).num_hidden_layers
    assert n_layers >= 2
    run_id, run_dir, code, events = run_inprocess(rm_project, cfg_for(tiny_model_dir, lora_top_layers=1,
                                                                      checkpoint_every=0))
    assert code == 0, [e.data for e in events if e.type.value == "error"]
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in weights if ".layers." in k}
    assert layers == {n_layers - 1}
    assert all(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
