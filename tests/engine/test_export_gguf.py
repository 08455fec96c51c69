"""The GGUF writer on tiny Llama and Qwen2 models: llama.cpp's names and rotary layout, the tokenizer metadata, f16
and q8_0, read back through transformers; and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.export.gguf_file import (
    ROPE_FREQS,
    apply_rope_factors,
    gguf_architecture,
    interleave_rotary_rows,
    read_rope_factors,
    write_gguf,
)
from engine.export.gguf_vocab import CONTROL, NORMAL, UNUSED, gguf_vocab
from engine.model_errors import ModelError
from tests.tiny_models import build_tiny_causal_lm, copy_model_folder


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("qwen2") / "tiny-qwen2", arch="qwen2")


def _model(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in model.parameters():  # away from the init, so every weight matters
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_rotary_rows_go_back_the_way_transformers_reads_them():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    weight = np.arange(4 * 8 * 3, dtype=np.float32).reshape(32, 3)  # 4 heads of dimension 8
    moved = interleave_rotary_rows(weight, 4)
    assert not np.array_equal(moved, weight)
    # head 0: rows 0..3 are the first half, 4..7 the second; llama.cpp wants them in pairs (0, 4, 1, 5, ...)
    assert moved[:8, 0].tolist() == weight[[0, 4, 1, 5, 2, 6, 3, 7], 0].tolist()
    back = LlamaTensorProcessor()._reverse_permute_weights(moved, 4, 4)
    assert np.array_equal(back, weight)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_reads_back_with_the_same_tokens_and_logits(arch, quant, tiny_model_dir, tiny_qwen2, tmp_path):
    folder = tiny_model_dir if arch == "llama" else tiny_qwen2
    model = _model(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = gguf_vocab(tokenizer, model.config.vocab_size)
    info = write_gguf(tmp_path / "model.gguf", model, vocab, quant, name="tiny")
    assert info["architecture"] == arch and info["tokenizer_pre"] == ("gpt-2" if arch == "llama" else "qwen2")
    assert info["tensor_types"] == (["f16", "f32"] if quant == "f16" else ["f32", "q8_0"])

    from gguf import GGUFReader

    reader = GGUFReader(str(tmp_path / "model.gguf"))
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output_norm.weight"} <= names
    assert "output.weight" not in names  # tied: llama.cpp reads the embedding
    assert ("blk.0.attn_q.bias" in names) == (arch == "qwen2")
    assert bytes(reader.fields["tokenizer.chat_template"].parts[-1]).decode() == tokenizer.chat_template

    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    back_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Prices rose 12345% in 2024, naïve café!"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert back_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0]
        theirs = back(torch.tensor([ids])).logits[0]
    frac = float((ours - theirs).abs().max() / ours.abs().max())
    assert frac < (0.01 if quant == "f16" else 0.05)
    assert frac > 0  # the file holds rounded weights, not the model's own


def test_vocabulary_types_and_padding_rows(tiny_qwen2):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    vocab = gguf_vocab(tokenizer, len(tokenizer) + 8)
    assert len(vocab.tokens) == len(tokenizer) + 8
    assert vocab.token_types[:3] == [CONTROL] * 3 and vocab.token_types[3] == NORMAL
    assert vocab.tokens[-1] == f"[PAD{len(tokenizer) + 7}]" and vocab.token_types[-8:] == [UNUSED] * 8
    assert vocab.merges[0] == "Ġ t" and (vocab.bos_id, vocab.eos_id, vocab.pad_id) == (1, 2, 0)
    assert not vocab.add_bos and not vocab.add_eos
    with pytest.raises(ModelError, match="embedding has only"):
        gguf_vocab(tokenizer, len(tokenizer) - 1)


def test_a_pre_tokenizer_llama_cpp_does_not_know_is_refused(tiny_model_dir, tmp_path):
    folder = copy_model_folder(tiny_model_dir, tmp_path / "odd")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                      "use_regex": True}]}
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="pre-tokenizer llama.cpp has no name for"):
        gguf_vocab(AutoTokenizer.from_pretrained(folder), 400)


def test_architectures_and_variants_not_covered_are_refused(tiny_model_dir):
    from transformers import AutoConfig, MistralConfig

    with pytest.raises(ModelError, match="covers the llama and qwen2 architectures; this model is 'mistral'"):
        gguf_architecture(MistralConfig())
    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert gguf_architecture(config).interleave_qk
    config.attention_bias = True
    with pytest.raises(ModelError, match="biases on the attention or MLP layers"):
        gguf_architecture(config)
    config.attention_bias = False
    config.rope_parameters = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    assert gguf_architecture(config).gguf_name == "llama"  # Llama 3's scaling is llama.cpp's rope_freqs
    config.rope_parameters = {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 4.0}
    with pytest.raises(ModelError, match="rope scaling 'yarn'"):
        gguf_architecture(config)


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


@pytest.fixture(scope="module")
def tiny_llama3_rope(tmp_path_factory):
    """The tiny Llama with Llama 3's rope scaling, its original context so short (64) that the scaling changes
    most of the rotary frequencies a few dozen tokens use."""
    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("llama3-rope") / "tiny-llama")
    folder = copy_model_folder(folder, folder.parent / "tiny-llama3-rope")
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = LLAMA3_ROPE
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_llama3_rope_scaling_is_written_as_rope_freqs_and_reads_back(tiny_llama3_rope, tmp_path):
    model = _model(tiny_llama3_rope)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama3_rope)
    write_gguf(tmp_path / "model.gguf", model, gguf_vocab(tokenizer, model.config.vocab_size), "f16", name="tiny")
    factors = read_rope_factors(tmp_path / "model.gguf")
    # head dimension 16: 8 frequencies, wavelengths 6.3, 20, 63, 199, …; below 64/4 unscaled, above 64 divided by
    # the factor, smoothly in between
    assert factors is not None and factors.shape == (8,)
    assert factors[0] == pytest.approx(1.0) and 1.0 < factors[1] < factors[2] < 8.0
    assert factors[3:] == pytest.approx([8.0] * 5)

    text = "Prices rose 12345% in 2024, and the naïve café owner counted every coin twice before closing. " * 2
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        ours = model(ids).logits[0]
        unscaled = back(ids).logits[0]  # transformers' reader leaves rope_freqs out
        apply_rope_factors(back, factors)
        theirs = back(ids).logits[0]
    assert ids.shape[1] > 64
    assert float((ours - unscaled).abs().max() / ours.abs().max()) > 0.05  # the scaling matters in this model
    assert float((ours - theirs).abs().max() / ours.abs().max()) < 0.01


def test_a_llama3_scaled_model_exports_to_gguf_and_passes_its_checks(tiny_llama3_rope, tmp_path):
    from engine.export.job import GGUF_FILE
    from tests.engine.test_export_job import export
    from tests.tiny_models import build_tiny_lora_adapter

    adapter = build_tiny_lora_adapter(tiny_llama3_rope, tmp_path / "adapter")
    code, events, summary = export(adapter=str(adapter), output=str(tmp_path / "out"), format="gguf")
    assert code == 0, events[-1].data
    checks = summary["checks"]
    assert checks["greedy_match"] and checks["tokenizer_match"] and 0 < checks["logit_max_diff_frac"] < 0.01
    from gguf import GGUFReader

    assert ROPE_FREQS in {t.name for t in GGUFReader(str(tmp_path / "out" / GGUF_FILE)).tensors}
