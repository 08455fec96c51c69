"""End to end on the bundled SmolLM2 (slow): the ``ppo`` job with a reward adapter + head on the shared base runs a
couple of steps, checkpoints, and writes a policy adapter that peft loads and that generates text."""

from __future__ import annotations

import io

import pytest
import torch
from peft import LoraConfig

from engine.worker import run as run_worker
from tests.engine.sft_helpers import QUESTIONS
from workbench.configs import PpoConfig
from workbench.jobs import JobClient
from workbench.store import Project


@pytest.mark.slow
def test_ppo_on_the_bundled_model(project_path, tmp_path):
    from engine.models import load_model
    from engine.reward_model import HeadedModel

    rm_dir = tmp_path / "rm"
    hm = HeadedModel(load_model(device="cpu", quantize="none").model)
    hm.add_adapter("rm", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), head=True, seed=0)
    hm.save_adapter("rm", rm_dir)
    del hm
    with Project.create(project_path) as p:
        for q, _ in QUESTIONS[:4]:
            p.add_prompt([{"role": "user", "content": q}], source="test")
    cfg = PpoConfig(device="cpu", quantize="none", reward_model=str(rm_dir), batch_size=2, rollout_batch_size=4,
                    ppo_epochs=1, max_new_tokens=8, max_steps=2, checkpoint_every=1, lora_r=4, lora_alpha=8,
                    lora_targets=["q_proj", "v_proj"], max_length=128, lr=1e-4, seed=0)
    run_id, run_dir = JobClient(project_path).prepare("ppo", cfg)
    buf = io.StringIO()
    assert run_worker(run_dir, stdout=buf, own_process=False) == 0, buf.getvalue()[-3000:]
    with Project.open(project_path) as p:
        assert p.get_run(run_id)["status"] == "done"
        kl = [v for _, _, v in p.metrics(run_id, "rollout/kl")]
        # the first rollout comes from the policy = reference: its KL is zero up to the rounding between the
        # sampler's cached decode and the reference's fresh forward
        assert len(kl) == 2 and abs(kl[0]) < 1e-4
        samples = p.responses(source=f"ppo run {run_id}")
        assert samples and all(s.content.strip() for s in samples)
    from peft import PeftModel

    lm = load_model(device="cpu", quantize="none")
    model = PeftModel.from_pretrained(lm.model, run_dir / "adapter")
    enc = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
