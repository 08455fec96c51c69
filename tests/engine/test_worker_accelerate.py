"""SFT under ``accelerate launch`` with 2 CPU processes gives the losses of one process with the same global batch."""

from __future__ import annotations

import io

import pytest

from engine.worker import run as run_worker
from tests.engine.sft_helpers import add_demonstrations
from workbench.configs import SftConfig
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
