"""A model reference's files read without torch: where config.json is (folder, adapter folder, bundled model,
converted GGUF, hub cache), the safetensors headers, and the refusal of architectures the trainers cannot train,
from the command line and the job client before any run row exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_causal_lm
from workbench.errors import WorkbenchError
from workbench.jobs import JobClient
from workbench.configs import SftConfig
from workbench.model_files import (
    ATTENTION_OUTSIDE_INTERFACE, model_refusal, read_config, resolve_model_folder, tensor_shapes, training_refusal,
)
from workbench.store import Project


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny")


def _config_folder(path: Path, config: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_model_folder_and_an_adapter_folder_lead_to_the_models_config(tiny, tmp_path):
    assert resolve_model_folder(str(tiny)) == tiny
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny)}))
    assert resolve_model_folder(str(adapter)) == tiny
    assert resolve_model_folder(str(tmp_path / "missing")) is None
    assert read_config(tiny)["model_type"] == "llama"


def test_bundled_gguf_and_hub_references_resolve_to_their_caches(tmp_path, monkeypatch):
    from workbench.paths import gguf_cache_dir

    monkeypatch.setenv("RLHF_WORKBENCH_CACHE", str(tmp_path / "cache"))
    assert resolve_model_folder("bundled:SmolLM2-135M-Instruct") is None  # not converted yet
    _config_folder(tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct", {"model_type": "llama"})
    assert resolve_model_folder("bundled:SmolLM2-135M-Instruct") == tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_folder(str(gguf)) is None
    _config_folder(gguf_cache_dir(gguf), {"model_type": "qwen2"})
    assert read_config(resolve_model_folder(str(gguf)))["model_type"] == "qwen2"

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_folder("org/model") is None
    repo = tmp_path / "hub" / "models--org--model"
    _config_folder(repo / "snapshots" / "abc123", {"model_type": "mistral"})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve_model_folder("org/model") == repo / "snapshots" / "abc123"


def test_safetensors_headers_give_every_weights_shape_without_loading_it(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    shapes = tensor_shapes(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to the embeddings
    assert {k: list(v.shape) for k, v in state.items()} == {k: s for k, (_, s) in shapes.items()}
    assert {d for d, _ in shapes.values()} == {"F32"} and all(v.dtype == torch.float32 for v in state.values())


def test_a_multimodal_config_is_read_through_its_text_model(tmp_path):
    # Gemma 3's multimodal config: the text model's sizes, the outer architecture
    folder = _config_folder(tmp_path / "gemma3", {"model_type": "gemma3",
                                                  "architectures": ["Gemma3ForConditionalGeneration"],
                                                  "text_config": {"model_type": "gemma3_text", "hidden_size": 64}})
    cfg = read_config(folder)
    assert cfg["hidden_size"] == 64 and cfg["outer_model_type"] == "gemma3"
    assert training_refusal(cfg) is None


@pytest.mark.parametrize("config,named", [
    ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True},
     "T5ForConditionalGeneration (t5)"),
    ({"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"]}, "GPTNeoForCausalLM (gpt_neo)"),
    ({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}, "MambaForCausalLM (mamba)"),
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "BertForMaskedLM (bert)"),
])
def test_architectures_the_trainers_cannot_train_are_refused_by_name(config, named):
    message = training_refusal(config)
    assert message is not None and named in message and "cannot be trained" in message


@pytest.mark.parametrize("model_type,arch", [("llama", "LlamaForCausalLM"), ("gemma2", "Gemma2ForCausalLM"),
                                             ("qwen3", "Qwen3ForCausalLM"), ("phi3", "Phi3ForCausalLM")])
def test_the_trained_families_pass(model_type, arch):
    assert training_refusal({"model_type": model_type, "architectures": [arch]}) is None


def test_the_table_of_architectures_outside_the_attention_interface_matches_transformers():
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    outside = set()
    for model_type, class_name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        cls = getattr(transformers, class_name, None)
        if cls is not None and not getattr(cls, "_supports_attention_backend", False):
            outside.add(model_type)
    assert outside == set(ATTENTION_OUTSIDE_INTERFACE), (
        f"update workbench.model_files.ATTENTION_OUTSIDE_INTERFACE: now outside {sorted(outside - ATTENTION_OUTSIDE_INTERFACE)}, "
        f"no longer {sorted(ATTENTION_OUTSIDE_INTERFACE - outside)}")


def test_a_refused_architecture_leaves_the_project_without_a_run(tmp_path, project_path):
    from workbench.cli import main

    neo = _config_folder(tmp_path / "neo", {"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"]})
    Project.create(project_path).close()
    assert model_refusal(str(neo))
    with pytest.raises(WorkbenchError, match=r"GPTNeoForCausalLM \(gpt_neo\) cannot be trained"):
        JobClient(project_path).prepare("sft", SftConfig(base_model=str(neo)))
    assert main(["train", "dpo", str(project_path), "--base", str(neo), "--quiet"]) == 1
    with Project.open(project_path) as p:
        assert p.runs() == []
    # generating from such a model is not training: the job client lets it through
    from workbench.configs import GenerateConfig

    run_id, _ = JobClient(project_path).prepare("generate", GenerateConfig(base_model=str(neo)))
    assert run_id == 1
