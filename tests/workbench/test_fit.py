"""The memory estimate before a run (workbench.fit): the model's shape from its files agrees with the model torch
builds, the LoRA parameters with peft's, the parts move the way the settings say, the suggestions make a run fit,
and ``workbench train --dry-run`` and a run that does not fit leave the project without a run."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_causal_lm
from workbench.configs import DpoConfig, PpoConfig, RewardConfig, SftConfig
from workbench.fit import DeviceMemory, device_memory, estimate, model_shape
from workbench.store import Project

PLENTY = DeviceMemory("cpu", 10**7, "test")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def phi3(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "phi3", arch="phi3")


@pytest.mark.parametrize("arch", ["tiny", "phi3"])
def test_the_shape_read_from_the_files_is_the_model_torch_builds(arch, request):
    from transformers import AutoModelForCausalLM

    folder = request.getfixturevalue(arch)
    shape = model_shape(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert shape.params == sum(p.numel() for p in model.parameters())
    linears = [m for n, m in model.named_modules() if type(m).__name__ == "Linear" and ".layers." in f".{n}."]
    assert shape.linear_params == sum(m.weight.numel() for m in linears)


def test_without_weights_the_config_gives_a_llama_models_linear_layers(tiny, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny / "config.json", bare / "config.json")
    assert model_shape(bare).linear_params == model_shape(tiny).linear_params


@pytest.mark.parametrize("settings", [{}, {"lora_targets": ["q_proj", "v_proj"]}, {"lora_top_layers": 1},
                                      {"lora_r": 3, "lora_top_layers": 1}])
def test_lora_parameters_are_those_peft_creates(tiny, settings):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.lora import LoraSettings, attach_lora
    from workbench.fit import _lora_params

    cfg = SftConfig(base_model=str(tiny), **settings)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    peft = attach_lora(model, LoraSettings.from_run_config(cfg, model))
    trained = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert _lora_params(model_shape(tiny), cfg) == trained


def _mb(stage, cfg, part=None, memory=PLENTY):
    est = estimate(stage, cfg, memory=memory)
    return est.parts.get(part, 0.0) if part else est.estimate_mb


def test_the_parts_follow_the_settings(tiny):
    base = SftConfig(base_model=str(tiny), device="cpu", batch_size=4, max_length=256, tokens_per_pass=0)
    assert _mb("sft", base.replace(batch_size=8), "activations") == pytest.approx(2 * _mb("sft", base, "activations"),
                                                                                  rel=0.01)
    # passes of at most tokens_per_pass tokens: 8 × 256 tokens run as two passes of 1,024, as 4 × 256 does in one
    assert _mb("sft", base.replace(batch_size=8, tokens_per_pass=1024), "activations") == pytest.approx(
        _mb("sft", base, "activations"), rel=0.01)
    # two layers here: checkpointing keeps their inputs and one layer recomputed instead of both layers whole
    assert _mb("sft", base.replace(gradient_checkpointing=True), "activations") < _mb("sft", base, "activations")
    assert _mb("sft", base.replace(quantize="4bit"), "weights") < _mb("sft", base, "weights")
    assert _mb("sft", base.replace(dtype="bfloat16"), "weights") == pytest.approx(_mb("sft", base, "weights") / 2)
    assert _mb("sft", base.replace(lora_top_layers=1), "activations") < _mb("sft", base, "activations")
    # the reward model reads a head, no logits; a pair holds a prompt and two responses
    rm = RewardConfig(base_model=str(tiny), device="cpu", batch_size=4, max_length=256, gradient_checkpointing=False,
                      tokens_per_pass=0)
    assert _mb("rm", rm, "logits") == 0 and _mb("rm", rm, "activations") > _mb("sft", base, "activations")
    # the output layer runs in chunks of rows: no more logits for a longer pass; PPO trains two adapters (policy
    # and value) on one base
    assert _mb("sft", base.replace(batch_size=16), "logits") == _mb("sft", base, "logits") > 0
    ppo = PpoConfig(base_model=str(tiny), device="cpu", reward_model="rule:contains:x")
    assert _mb("ppo", ppo, "optimizer") == pytest.approx(2 * _mb("sft", base, "optimizer"), rel=0.01)
    assert _mb("ppo", ppo.replace(advantage_estimator="rloo", samples_per_prompt=2), "optimizer") == pytest.approx(
        _mb("sft", base, "optimizer"), rel=0.01)
    # with a value model, the value's pass follows the policy's on every chunk: the allocator keeps both
    # (chunks of 8 rows, so the update is the peak phase of this tiny model)
    gae = ppo.replace(backward_rows=8)
    rloo = gae.replace(advantage_estimator="rloo", samples_per_prompt=2)
    assert _mb("ppo", rloo, "allocator") > 0
    assert _mb("ppo", gae, "allocator") == pytest.approx(2 * _mb("ppo", rloo, "allocator") - _mb("ppo", rloo, "logits")
                                                         / 3, rel=0.01)
    # on CUDA: half precision, 4-bit by default, no glibc allocator share
    cuda = DeviceMemory("cuda", 10**6, "test")
    assert _mb("sft", base, "weights", memory=cuda) < _mb("sft", base, "weights") / 4
    assert _mb("sft", base, "allocator", memory=cuda) == 0


def test_a_run_that_does_not_fit_gets_settings_that_do(tiny):
    cfg = SftConfig(base_model=str(tiny), device="cpu", batch_size=8, max_length=1024, tokens_per_pass=0)
    need = _mb("sft", cfg)
    tight = DeviceMemory("cpu", need * 0.8, "test")
    est = estimate("sft", cfg, memory=tight)
    assert est.fits is False and est.suggestions
    for s in est.suggestions:
        changed = estimate("sft", dataclasses.replace(cfg, **s["set"]), memory=tight)
        assert changed.fits and changed.estimate_mb == s["estimate_mb"] <= tight.available_mb
    assert estimate("sft", cfg, memory=DeviceMemory("cpu", None, "test")).fits is None
    assert estimate("sft", cfg, memory=PLENTY).fits is True and estimate("sft", cfg, memory=PLENTY).suggestions == []


def test_the_cpus_free_memory_is_the_kernels_memavailable():
    mem = device_memory("cpu")
    with open("/proc/meminfo") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert mem.device == "cpu" and mem.available_mb == pytest.approx(kb / 1024, rel=0.2)


def test_no_estimate_without_the_models_files(tmp_path):
    assert estimate("sft", SftConfig(base_model=str(tmp_path / "nowhere")), memory=PLENTY) is None
    assert estimate("generate", SftConfig(), memory=PLENTY) is None


# ---------------------------------------------------------------------------------------------- the command line
def _demos(path: Path) -> None:
    with Project.create(path) as p:
        for i in range(4):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Say {i}."}])
            p.add_demonstration(pid, f"{i}.")


def test_dry_run_prints_the_estimate_and_creates_no_run(tiny, project_path, capsys):
    from workbench.cli import main

    _demos(project_path)
    code = main(["train", "sft", str(project_path), "--base", str(tiny), "--dry-run", "--batch-size", "2"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["fits"] is True and out["estimate_mb"] > 0 and out["available_mb"] > 0
    assert out["estimate_mb"] == pytest.approx(sum(out["parts_mb"].values()), abs=1)
    assert {"weights", "activations", "logits", "optimizer"} <= set(out["parts_mb"])
    with Project.open(project_path) as p:
        assert p.runs() == []


def test_a_run_too_big_for_the_machine_is_refused_with_exit_code_3(tmp_path, project_path, capsys):
    from workbench.cli import main

    # a 70B-sized Llama config (no weights needed to estimate): hundreds of GB in float32
    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
        "tie_word_embeddings": False}))
    _demos(project_path)
    code = main(["train", "sft", str(project_path), "--base", str(big), "--device", "cpu", "--dry-run"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 3 and out["fits"] is False and out["estimate_mb"] > out["available_mb"]
    code = main(["train", "sft", str(project_path), "--base", str(big), "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 3 and summary["status"] == "failed" and summary["fit"]["fits"] is False
    assert "--force" in captured.err and "does NOT fit" in captured.err
    with Project.open(project_path) as p:
        assert p.runs() == []
