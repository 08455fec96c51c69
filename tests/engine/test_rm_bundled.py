"""End to end on the bundled SmolLM2 (slow): the ``rm`` job through the job client on a few real HH-RLHF preference
pairs runs a few steps, reports held-out accuracy, writes an adapter + head that load back and score, and leaves the
base weights as they were."""

from __future__ import annotations

import gzip
import io
import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.bundled import file_sha256
from engine.reward_model import HEAD_FILE, HeadedModel, read_head_meta
from engine.worker import run as run_worker
from workbench.configs import RewardConfig
from workbench.importers import import_file
from workbench.jobs import JobClient
from workbench.store import Project

HH = "anthropic-hh-rlhf/helpful-base/test.jsonl.gz"


@pytest.mark.slow
def test_reward_model_on_the_bundled_model(test_data, project_path, tmp_path):
    from engine.models import load_model, resolve_model_path

    # 16 real preference pairs: the shortest of the first 40 HH helpful-base rows (the split's own first 40, which
    # the sample in tests/data begins with), so a step stays cheap
    with gzip.open(test_data / HH, "rt", encoding="utf-8") as f:
        rows = sorted(itertools.islice(f, 40), key=len)[:16]
    src = tmp_path / "hh.jsonl"
    src.write_text("".join(rows), encoding="utf-8")
    with Project.create(project_path) as p:
        import_file(p, src, "hh-rlhf")
        assert len(p.prompt_ids()) == 16
    base_dir = resolve_model_path("bundled:SmolLM2-135M-Instruct")
    base_hash = file_sha256(base_dir / "model.safetensors")

    cfg = RewardConfig(device="cpu", quantize="none", batch_size=2, max_steps=3, max_length=160, eval_fraction=0.25,
                       checkpoint_every=0, lora_r=4, lora_alpha=8, lora_targets=["q_proj", "v_proj"], lr=1e-4,
                       gradient_checkpointing=False, seed=0)
    run_id, run_dir = JobClient(project_path).prepare("rm", cfg)
    buf = io.StringIO()
    assert run_worker(run_dir, stdout=buf, own_process=False) == 0, buf.getvalue()[-3000:]
    with Project.open(project_path) as p:
        run = p.get_run(run_id)
        assert run["status"] == "done"
        losses = [v for _, _, v in p.metrics(run_id, "train/loss")]
    fm = run["final_metrics"]
    assert len(losses) == 3 and all(0.0 < v < 5.0 for v in losses)
    # held-out pairs (split by prompt): 4 of the 16, with accuracy and its interval
    assert fm["eval/pairs"] == 4
    assert 0.0 <= fm["eval/accuracy_low"] <= fm["eval/accuracy"] <= fm["eval/accuracy_high"] <= 1.0
    assert "eval/loss" in fm and "train/reward_std" in fm

    out = run_dir / "adapter"
    tensors = load_file(out / "adapter_model.safetensors")
    assert tensors and all("lora_" in k for k in tensors)  # the adapter holds LoRA weights only, no base weights
    assert read_head_meta(out)["kind"] == "reward"
    # the base weights on disk are untouched, and the base in memory is too: adapter off = a fresh base
    assert file_sha256(base_dir / "model.safetensors") == base_hash
    lm = load_model(device="cpu", quantize="none")
    ids = torch.tensor([lm.tokenizer.encode("Hello, how can I help you today?")])
    with torch.no_grad():
        fresh = lm.model(input_ids=ids).logits
    hm = HeadedModel(lm.model)
    hm.load_adapter("reward", out)
    hm.activate("reward")
    with torch.no_grad():
        score = hm.score("reward", ids, torch.ones_like(ids))
    assert score.shape[0] == 1 and torch.isfinite(score).all()
    with torch.no_grad(), hm.peft.disable_adapter():
        assert torch.equal(hm.peft(input_ids=ids).logits, fresh)
    head = load_file(out / HEAD_FILE)
    assert torch.equal(hm.heads["reward"].weight.detach(), head["weight"])
