"""A merged Hugging Face causal LM written as one GGUF file for llama.cpp, with the ``gguf`` library's writer.

The ``gguf`` package has the file writer, llama.cpp's tensor-name map and Q8_0 quantisation, but no Hugging Face
converter; the mapping below is ours, written from the GGUF format's description:

- architectures covered: ``llama`` (Llama, SmolLM) and ``qwen2``; any other is refused by name before anything is
  written, as are variants their llama.cpp graphs do not compute (attention or MLP biases on Llama, a sliding window
  on Qwen2, rope scaling other than Llama 3's);
- Llama 3's rope scaling (``rope_type: llama3``, Llama 3.1 and 3.2) is llama.cpp's ``rope_freqs`` tensor: per
  rotary frequency, the divisor the scaling applies. It is read off the model itself (the default frequencies over
  those its rotary embedding uses), so it is what transformers computes. transformers' GGUF reader does not rebuild
  rope scaling, so the export's read-back check puts the file's ``rope_freqs`` into the model it reads back
  (:func:`apply_rope_factors`), as llama.cpp does;
- tensor names from ``gguf.get_tensor_name_map`` (``model.layers.3.self_attn.q_proj.weight`` →
  ``blk.3.attn_q.weight``); a tied output layer is left out (llama.cpp then uses ``token_embd``);
- llama.cpp's Llama applies rotary embeddings to interleaved pairs of each head's dimensions, where transformers'
  Llama rotates the first half against the second, so the rows of ``q_proj`` and ``k_proj`` (per head: first half,
  second half) are reordered to alternate (0, h, 1, h+1, …). Qwen2 uses the half-split layout in llama.cpp too, so
  its rows stay as they are;
- tensor types: f16 (2-D weights in float16, norms and biases in float32, as llama.cpp's own files) or q8_0
  (2-D weights in Q8_0 blocks of 32 where the row length allows, float16 otherwise);
- hyper-parameters as ``<arch>.*`` keys, the tokenizer as ``tokenizer.ggml.*`` (:mod:`.gguf_vocab`).

Tensors are converted one at a time while the file is written, so the export holds one converted tensor at a time
beside the model; every byte goes through :class:`.output.OutputFile`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..model_errors import ModelError
from .gguf_vocab import GgufVocab, add_vocab
from .output import OutputFile

QUANTS = ("f16", "q8_0")
ROPE_FREQS = "rope_freqs.weight"
SCALED_ROPE = {"llama": "llama3"}  # the rope scaling each architecture's GGUF can hold (as rope_freqs)
_Q8_BLOCK, _Q8_BYTES = 32, 34


@dataclass(frozen=True)
class GgufArchitecture:
    """How one transformers architecture maps to llama.cpp's."""

    model_type: str
    gguf_name: str
    interleave_qk: bool  # reorder q/k rows for llama.cpp's rotary layout


ARCHITECTURES = {
    "llama": GgufArchitecture("llama", "llama", interleave_qk=True),
    "qwen2": GgufArchitecture("qwen2", "qwen2", interleave_qk=False),
}


def _rope(config: Any) -> tuple[float, str]:
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and "rope_theta" not in params and params:
        params = next(iter(params.values())) if isinstance(next(iter(params.values())), dict) else params
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0)) if isinstance(params, dict) else 10000.0
    kind = (params.get("rope_type") or params.get("type") or "default") if isinstance(params, dict) else "default"
    return float(theta), str(kind)


def gguf_architecture(config: Any) -> GgufArchitecture:
    """The GGUF mapping of a model config, or a ModelError naming what the GGUF writer does not cover."""
    model_type = getattr(config, "model_type", None)
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise ModelError(f"GGUF export covers the {' and '.join(ARCHITECTURES)} architectures; this model is "
                         f"{model_type!r} (export it with --format hf instead)")
    _, rope_type = _rope(config)
    problems = []
    if rope_type not in ("default", SCALED_ROPE.get(model_type)):
        problems.append(f"rope scaling {rope_type!r}")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"activation {config.hidden_act!r}")
    if model_type == "llama" and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        problems.append("biases on the attention or MLP layers")
    if model_type == "qwen2" and getattr(config, "use_sliding_window", False):
        problems.append("a sliding attention window")
    if problems:
        raise ModelError(f"GGUF export of this {model_type} model is not covered: it uses {', '.join(problems)}, which "
                         "the GGUF writer does not map (export it with --format hf instead)")
    return arch


def head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def default_inv_freq(config: Any) -> np.ndarray:
    """The rotary frequencies without scaling: theta^(-2i/d) for each pair of a head's dimensions."""
    theta, _ = _rope(config)
    dim = head_dim(config)
    return 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)


def _rotary(model: Any) -> Any:
    import torch

    return next(m for m in model.modules() if isinstance(getattr(m, "inv_freq", None), torch.Tensor))


def rope_factors(model: Any) -> np.ndarray | None:
    """llama.cpp's ``rope_freqs`` of ``model``: per rotary frequency, the default frequency over the one the model's
    rotary embedding uses (None without rope scaling)."""
    _, kind = _rope(model.config)
    if kind == "default":
        return None
    used = _rotary(model).inv_freq.detach().to("cpu").double().numpy()
    return (default_inv_freq(model.config) / used).astype(np.float32)


def read_rope_factors(path: Path) -> np.ndarray | None:
    """The ``rope_freqs`` tensor of a GGUF file, if it has one."""
    import gguf

    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name == ROPE_FREQS:
            return np.array(t.data, dtype=np.float32)
    return None


def apply_rope_factors(model: Any, factors: np.ndarray) -> None:
    """Make ``model`` (a GGUF read back through transformers, which ignores ``rope_freqs``) rotate as llama.cpp
    does with them: each default frequency divided by its factor."""
    import torch

    rotary = _rotary(model)
    freqs = default_inv_freq(model.config) / factors.astype(np.float64)
    rotary.inv_freq = torch.tensor(freqs, dtype=torch.float32, device=rotary.inv_freq.device)


def interleave_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a q or k projection (or its bias) reordered per head from (first half, second half) to alternating
    pairs, the rotary layout llama.cpp's Llama expects."""
    rows = weight.shape[0]
    half = rows // n_heads // 2
    return weight.reshape(n_heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@dataclass
class _Planned:
    gguf_name: str
    hf_name: str
    kind: str  # f32 | f16 | q8_0
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = int(np.prod(self.shape))
        if self.kind == "q8_0":
            return n // _Q8_BLOCK * _Q8_BYTES
        return n * (2 if self.kind == "f16" else 4)


def plan_tensors(model: Any, arch: GgufArchitecture, quant: str) -> list[_Planned]:
    """Every tensor of the file: its GGUF name, the Hugging Face tensor it comes from, its type and shape."""
    import gguf

    if quant not in QUANTS:
        raise ModelError(f"GGUF tensor type {quant!r} is not one of {', '.join(QUANTS)}")
    config = model.config
    names = gguf.get_tensor_name_map(_model_arch(arch), config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    planned = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ModelError(f"GGUF export: the tensor {hf_name} has no place in llama.cpp's {arch.gguf_name} layout")
        shape = tuple(tensor.shape)
        if len(shape) == 1:
            kind = "f32"
        elif quant == "q8_0" and shape[-1] % _Q8_BLOCK == 0:
            kind = "q8_0"
        else:
            kind = "f16"
        planned.append(_Planned(gguf_name, hf_name, kind, shape))
    if _rope(config)[1] != "default":
        planned.append(_Planned(ROPE_FREQS, "", "f32", (head_dim(config) // 2,)))
    return planned


def _model_arch(arch: GgufArchitecture):
    import gguf

    return next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch.gguf_name)


def estimated_size(model: Any, quant: str) -> int:
    """Bytes the GGUF file will take (tensors; the metadata is small beside them)."""
    return sum(p.nbytes for p in plan_tensors(model, gguf_architecture(model.config), quant))


class _PythonWritten(np.ndarray):
    """A view whose ``tofile`` writes through the file object's ``write`` (numpy's own writes to the file
    descriptor directly, past :class:`OutputFile`'s accounting)."""

    def tofile(self, fid: Any, sep: str = "", format: str = "%s") -> None:  # noqa: A002 - numpy's signature
        fid.write(np.ascontiguousarray(self).view(np.uint8).reshape(-1).data)


def _writer_class():
    import gguf
    from gguf.gguf_writer import WriterState

    class Writer(gguf.GGUFWriter):
        """The library's writer with its output file opened as an :class:`OutputFile`."""

        def open_output_file(self, path: Path | None = None) -> None:
            if self.state is WriterState.EMPTY and self.fout is not None:
                return
            if path is not None:
                self.path = path
            self.fout = [OutputFile(self.path)]  # type: ignore[list-item]
            self.state = WriterState.EMPTY

    return Writer


def _converted(tensor: Any, planned: _Planned, arch: GgufArchitecture, config: Any) -> np.ndarray:
    import gguf

    data = tensor.detach().to("cpu").float().numpy()
    if arch.interleave_qk and planned.gguf_name.split(".")[-2] in ("attn_q", "attn_k"):
        heads = config.num_attention_heads if ".attn_q." in planned.gguf_name else config.num_key_value_heads
        data = interleave_rotary_rows(data, heads)
    if planned.kind == "f32":
        return np.ascontiguousarray(data, dtype=np.float32)
    if planned.kind == "f16":
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)


def write_gguf(path: Path, model: Any, vocab: GgufVocab, quant: str, *, name: str,
               on_tensor: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write ``model`` (a merged causal LM) with ``vocab`` into ``path``; returns what was written."""
    import gguf

    config = model.config
    arch = gguf_architecture(config)
    planned = plan_tensors(model, arch, quant)
    theta, _ = _rope(config)
    writer = _writer_class()(None, arch.gguf_name)
    try:
        writer.add_name(name)
        writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16))
        if quant == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(int(config.num_hidden_layers))
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(int(config.num_attention_heads))
        writer.add_head_count_kv(int(config.num_key_value_heads or config.num_attention_heads))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_rope_freq_base(theta)
        writer.add_vocab_size(int(config.vocab_size))
        dim = head_dim(config)
        if arch.model_type == "llama":
            writer.add_rope_dimension_count(dim)
        if dim * config.num_attention_heads != config.hidden_size:
            writer.add_key_length(dim)
            writer.add_value_length(dim)
        add_vocab(writer, vocab)
        for p in planned:
            if p.kind == "q8_0":
                byte_shape = (*p.shape[:-1], p.shape[-1] // _Q8_BLOCK * _Q8_BYTES)
                writer.add_tensor_info(p.gguf_name, byte_shape, np.dtype(np.uint8), p.nbytes,
                                       raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                writer.add_tensor_info(p.gguf_name, p.shape, np.dtype(np.float16 if p.kind == "f16" else np.float32),
                                       p.nbytes)
        writer.write_header_to_file(Path(path))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        state = model.state_dict()
        factors = rope_factors(model)
        for i, p in enumerate(planned):
            data = factors if p.gguf_name == ROPE_FREQS else _converted(state[p.hf_name], p, arch, config)
            writer.write_tensor_data(data.view(_PythonWritten))
            if on_tensor is not None:
                on_tensor(i + 1, len(planned))
        writer.flush()
    finally:
        writer.close()
    return {"architecture": arch.gguf_name, "tensors": len(planned), "quant": quant,
            "tensor_types": sorted({p.kind for p in planned}), "tokenizer_pre": vocab.pre}
