"""Checkpoints under faults, through the real worker process: SIGKILL in the middle of writing one, and a disk that
fills while writing one. A checkpoint is written to a temporary folder and renamed, so what a resume finds is
always complete; the interrupted one leaves only its temporary folder, which the resume removes."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from engine import checkpoints as ckpt
from engine.faults import VARIABLE
from tests.engine.sft_helpers import add_demonstrations
from workbench.configs import SftConfig
from workbench.jobs import JobClient
from workbench.store import Project


def _config(tiny: Path, **kw) -> SftConfig:
    return SftConfig(base_model=str(tiny), batch_size=2, lr=5e-3, max_steps=6, checkpoint_every=2, eval_fraction=0.0,
                     warmup_ratio=0.2, seed=7, lora_r=4, lora_alpha=8, keep_checkpoints=5, num_threads=1, **kw)


def _project(path: Path) -> Path:
    with Project.create(path) as p:
        add_demonstrations(p)
    return path


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tiny_model_dir, tmp_path,
                                                                               monkeypatch):
    full = _project(tmp_path / "full.wbp")
    handle = JobClient(full).start("sft", _config(tiny_model_dir))
    assert handle.wait() == "done"

    path = _project(tmp_path / "killed.wbp")
    monkeypatch.setenv(VARIABLE, "kill-in-checkpoint:2")  # the second checkpoint: step 4
    client = JobClient(path)
    handle = client.start("sft", _config(tiny_model_dir))
    assert handle.wait() == "failed"
    root = handle.run_dir / "checkpoints"
    assert [c.name for c in ckpt.list_checkpoints(root)] == ["step-00000002"]
    assert (root / ".tmp-step-00000004" / "state.json").is_file()  # written whole, never renamed into place
    with Project.open(path) as p:
        assert "SIGKILL" in (p.get_run(handle.run_id)["error"] or "")

    monkeypatch.delenv(VARIABLE)
    resumed = client.resume(handle.run_id)
    assert resumed.wait() == "done"
    assert not list(root.glob(".tmp-*"))
    log = (handle.run_dir / "events.log").read_text()
    assert "removed .tmp-step-00000004" in log and "resumed from step-00000002 at step 2" in log
    # On the CPU the resumed run ends bit for bit where the uninterrupted one did.
    with Project.open(full) as p:
        full_dir = Path(p.get_run(1)["output_dir"])
    a = load_file(full_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(handle.run_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_a_full_disk_while_writing_a_checkpoint_fails_clearly_and_keeps_the_last_one(tiny_model_dir, tmp_path,
                                                                                     monkeypatch):
    path = _project(tmp_path / "full-disk.wbp")
    monkeypatch.setenv(VARIABLE, "enospc-in-checkpoint:2")
    handle = JobClient(path).start("sft", _config(tiny_model_dir))
    assert handle.wait() == "failed"
    root = handle.run_dir / "checkpoints"
    assert [c.name for c in ckpt.list_checkpoints(root)] == ["step-00000002"] and not list(root.glob(".tmp-*"))
    with Project.open(path) as p:
        error = p.get_run(handle.run_id)["error"]
    assert "no space left on the disk while writing the checkpoint of step 4" in error
    assert "the last complete checkpoint (step-00000002) is intact" in error
    monkeypatch.delenv(VARIABLE)
    assert JobClient(path).resume(handle.run_id).wait() == "done"
