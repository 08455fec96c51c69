"""The SFT job run in-process on a tiny model: what it trains, its output, exact resume, bad input."""

from __future__ import annotations

import io
import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from engine import checkpoints as ckpt
from engine.worker import run as run_worker
from tests.engine.sft_helpers import add_demonstrations
from workbench.configs import SftConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.store import Project


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture
def demo_project(project_path):
    with Project.create(project_path) as p:
        add_demonstrations(p)
    return project_path


def events_of(buf: io.StringIO) -> list[Event]:
    return [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]


def run_inprocess(project_path, cfg: SftConfig, *, resume_run: int | None = None, stdout=None):
    client = JobClient(project_path)
    if resume_run is None:
        run_id, run_dir = client.prepare("sft", cfg)
    else:
        run_id, run_dir = resume_run, client.attach(resume_run).run_dir
    buf = stdout or io.StringIO()
    code = run_worker(run_dir, resume=resume_run is not None, stdout=buf, own_process=False)
    return run_id, run_dir, code, events_of(buf)


def cfg_for(tiny, **kw) -> SftConfig:
    base = dict(base_model=str(tiny), batch_size=4, lr=5e-3, max_steps=6, checkpoint_every=3, eval_fraction=0.2,
                warmup_ratio=0.2, seed=7, lora_r=4, lora_alpha=8)
    base.update(kw)
    return SftConfig(**base)


def test_sft_trains_every_lora_weight_and_writes_a_loadable_adapter(tiny, demo_project):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.training import load_for_training

    cfg = cfg_for(tiny)
    torch.manual_seed(cfg.seed)
    initial, _ = load_for_training(cfg, torch.device("cpu"))
    trainable = {n for n, p in initial.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # the base is frozen: only LoRA reaches the optimizer
    init_state = {k: v.clone() for k, v in initial.state_dict().items() if "lora_" in k}

    run_id, run_dir, code, events = run_inprocess(demo_project, cfg)
    assert code == 0, events[-1]
    assert events[-1].type.value == "done"
    out = run_dir / "adapter"
    trained = load_file(out / "adapter_model.safetensors")
    assert trained and all("lora_" in k for k in trained)
    assert len(trained) == len(init_state)
    for key, value in trained.items():
        init_key = next(k for k in init_state if k.replace(".default", "") == key)
        assert not torch.equal(value, init_state[init_key]), f"{key} did not change"

    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    pristine = {k: v.clone() for k, v in base.state_dict().items()}
    model = PeftModel.from_pretrained(base, out)
    ids = torch.tensor([[1, 5, 6, 7]])
    with model.disable_adapter():
        plain = model(input_ids=ids).logits
    assert not torch.allclose(model(input_ids=ids).logits, plain)
    for k, v in model.get_base_model().state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, pristine[k.replace(".base_layer", "")])

    card = (out / "README.md").read_text()
    with Project.open(demo_project) as p:
        run = p.get_run(run_id)
        snap = p.snapshots()[-1]
        assert run["status"] == "done" and run["snapshot_id"] == snap["id"] and snap["kind"] == "sft"
        assert {"train/loss", "eval/loss"} <= set(run["final_metrics"])
        assert [s for s, _, _ in p.metrics(run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
        assert len(p.checkpoints(run_id)) == 1
    assert str(tiny) in card and snap["content_hash"] in card and "eval/loss" in card and "lora_r: 4" in card
    assert SftConfig.load(out / "config.yaml") == cfg


class CancelAtStep(io.StringIO):
    """Plays the client: reads the worker's events and, once step N is reported, asks it to stop (SIGTERM is the
    worker's cancel signal, exactly what a re-attached client sends)."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def write(self, s: str) -> int:
        n = super().write(s)
        ev = Event.from_json(s)
        if ev.type.value == "progress" and ev.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
        return n


def test_resume_continues_exactly(tiny, project_path, tmp_path):
    with Project.create(project_path) as p:
        add_demonstrations(p)
    cfg = cfg_for(tiny, max_steps=7, checkpoint_every=0, lora_dropout=0.1, grad_accum=2, batch_size=2, epochs=1)
    full_id, _, code, _ = run_inprocess(project_path, cfg)
    assert code == 0
    with Project.open(project_path) as p:
        sid = p.get_run(full_id)["snapshot_id"]
    cfg = cfg.replace(snapshot_id=sid)

    part_id, run_dir, code, events = run_inprocess(project_path, cfg, stdout=CancelAtStep(3))
    assert code == 0
    assert events[-1].type.value == "status" and events[-1].data["state"] == "cancelled"
    assert [c.name for c in ckpt.list_checkpoints(run_dir / "checkpoints")] == ["step-00000003"]
    with Project.open(project_path) as p:
        assert p.get_run(part_id)["status"] == "cancelled"

    _, _, code, events = run_inprocess(project_path, cfg, resume_run=part_id)
    assert code == 0 and events[-1].type.value == "done"
    with Project.open(project_path) as p:
        full = p.metrics(full_id, "train/loss")
        resumed = p.metrics(part_id, "train/loss")
        assert p.get_run(part_id)["status"] == "done"
    assert [s for s, _, _ in resumed] == [1, 2, 3, 4, 5, 6, 7]
    # on CPU the losses after the resume equal those of the uninterrupted run, bit for bit
    assert [v for _, _, v in resumed] == [v for _, _, v in full]
    assert load_file(run_dir / "adapter" / "adapter_model.safetensors").keys()


def _project_fingerprint(path):
    with Project.open(path) as p:
        stats = p.stats()
        return {
            **{k: stats[k] for k in ("prompts", "responses", "demonstrations", "comparisons", "snapshots")},
            "snapshot items": sum(sum(s["counts"].values()) for s in p.snapshots()),
            "metrics": sum(len(p.metrics(r["id"])) for r in p.runs()),
            "checkpoints": sum(len(p.checkpoints(r["id"])) for r in p.runs()),
        }


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_model", "no such file"),
        ("not_a_model", "not a model"),
        ("too_small", "training needs at least"),
    ],
)
def test_bad_input_fails_the_run_with_a_clear_reason_and_touches_nothing_else(case, expected, tiny, project_path, tmp_path):
    with Project.create(project_path) as p:
        add_demonstrations(p, n=1 if case == "too_small" else None)
    base = {"missing_model": str(tmp_path / "nowhere"), "not_a_model": str(tmp_path), "too_small": str(tiny)}[case]
    before = _project_fingerprint(project_path)
    run_id, _, code, events = run_inprocess(project_path, cfg_for(tiny, base_model=base))
    assert code == 1
    err = events[-1]
    assert err.type.value == "error" and expected in err.data["message"].lower()
    assert err.data["kind"] == "input"
    with Project.open(project_path) as p:
        run = p.get_run(run_id)
    assert run["status"] == "failed" and expected in run["error"].lower()
    assert _project_fingerprint(project_path) == before


def test_nan_loss_fails_the_run(tiny, demo_project):
    run_id, _, code, events = run_inprocess(demo_project, cfg_for(tiny, lr=1e30, max_grad_norm=0.0, max_steps=6))
    assert code == 1
    assert events[-1].data["kind"] == "nan" and "lower the learning rate" in events[-1].data["message"]
    with Project.open(demo_project) as p:
        assert p.get_run(run_id)["status"] == "failed"


def test_gradient_checkpointing_gives_the_same_losses(tiny, demo_project):
    cfg = cfg_for(tiny, max_steps=3, checkpoint_every=0, lora_dropout=0.0, eval_fraction=0.0)
    plain_id, _, code, _ = run_inprocess(demo_project, cfg)
    assert code == 0
    with Project.open(demo_project) as p:
        sid = p.get_run(plain_id)["snapshot_id"]
    ckpt_id, _, code, _ = run_inprocess(demo_project, cfg.replace(gradient_checkpointing=True, snapshot_id=sid))
    assert code == 0
    with Project.open(demo_project) as p:
        plain = [v for _, _, v in p.metrics(plain_id, "train/loss")]
        recomputed = [v for _, _, v in p.metrics(ckpt_id, "train/loss")]
    assert len(plain) == 3 and recomputed == pytest.approx(plain, rel=1e-5)


@pytest.mark.slow
def test_sft_on_the_bundled_smollm2(project_path):
    """End to end on the real bundled model: a few steps, an adapter that loads, a loss in a sane range."""
    with Project.create(project_path) as p:
        add_demonstrations(p)
    cfg = SftConfig(batch_size=2, max_steps=2, max_length=128, checkpoint_every=0, eval_fraction=0.0, lora_r=4)
    run_id, run_dir, code, events = run_inprocess(project_path, cfg)
    assert code == 0, events[-1]
    loss = events[-1].data["final_metrics"]["train/loss"]
    assert 0.0 < loss < 10.0
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(run_dir / "adapter").r == 4


def test_pruned_checkpoints_leave_no_rows_behind(tiny, demo_project):
    cfg = cfg_for(tiny, checkpoint_every=1, keep_checkpoints=2)
    run_id, run_dir, code, events = run_inprocess(demo_project, cfg)
    assert code == 0, events[-1]
    on_disk = {str(p) for p in ckpt.list_checkpoints(run_dir / "checkpoints")}
    assert sum(e.type.value == "checkpoint" for e in events) >= 5  # several were written, most then pruned
    with Project.open(demo_project) as p:
        rows = {c["path"] for c in p.checkpoints(run_id)}
    assert rows == on_disk and 1 <= len(rows) <= 3  # the last two and the best
