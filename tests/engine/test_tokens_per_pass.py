"""``tokens_per_pass`` splits a micro-batch into several forward/backward passes: SFT, the reward model and DPO
train exactly as with one pass (the same losses step by step, the same weights at the end) while the model runs
more, smaller passes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.worker import run as run_worker
from tests.engine.sft_helpers import add_demonstrations
from tests.engine.test_rm_job import add_preferences
from workbench.configs import DpoConfig, RewardConfig, SftConfig
from workbench.jobs import JobClient
from workbench.store import Project


def _run(project_path: Path, stage: str, cfg) -> tuple[list[float], dict[str, torch.Tensor], int]:
    """(the train/loss of every step, the output adapter's tensors, the decoder forwards the run made)."""
    from transformers.models.llama.modeling_llama import LlamaModel

    calls = [0]

    def count(module, _args):
        if isinstance(module, LlamaModel):
            calls[0] += 1

    hook = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        run_id, run_dir = JobClient(project_path).prepare(stage, cfg)
        assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0
    finally:
        hook.remove()
    with Project.open(project_path) as p:
        losses = [v for _, _, v in p.metrics(run_id, "train/loss")]
    return losses, load_file(str(run_dir / "adapter" / "adapter_model.safetensors")), calls[0]


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_passes_of_a_few_tokens_train_exactly_as_one_pass(tiny_model_dir, project_path, stage):
    with Project.create(project_path) as p:
        if stage == "sft":
            add_demonstrations(p)
        else:
            add_preferences(p)
    cls = {"sft": SftConfig, "rm": RewardConfig, "dpo": DpoConfig}[stage]
    common = dict(base_model=str(tiny_model_dir), batch_size=4, lr=5e-3, max_steps=3, checkpoint_every=0,
                  eval_fraction=0.0, warmup_ratio=0.0, seed=5, lora_r=4, lora_alpha=8, max_length=96,
                  gradient_checkpointing=False)
    whole, whole_weights, whole_calls = _run(project_path, stage, cls(**common, tokens_per_pass=0))
    # every example here is longer than 8 tokens, so each one makes its own pass
    split, split_weights, split_calls = _run(project_path, stage, cls(**common, tokens_per_pass=8))
    assert len(whole) == 3 and split == pytest.approx(whole, rel=1e-5)
    assert split_calls - whole_calls == 3 * (4 - 1)  # 4 passes a step instead of 1
    assert whole_weights.keys() == split_weights.keys()
    for name, tensor in whole_weights.items():
        # Adam divides by the gradient's running size: float-rounding differences of a near-zero gradient show as
        # differences of a few 1e-5 (a step moves a weight by about lr = 5e-3)
        torch.testing.assert_close(split_weights[name], tensor, rtol=1e-4, atol=5e-5)
