"""Will it fit? A training run's peak memory, estimated before it starts from the model's files and the run's
settings, beside the memory the device has free. Qt- and torch-free arithmetic, so ``workbench train --dry-run``, the
train commands' refusal and the Train page say the same.

The model's shape comes from its ``config.json`` and, when it has them, the headers of its safetensors files (the
exact shape of every weight: :mod:`workbench.model_files`). The estimate is the sum of its parts, in MB:

- ``runtime``: the process before any model (CPU: Python, torch, transformers, peft, accelerate and the tokenizer,
  about 0.4 GB resident, measured after the worker's imports; CUDA: the context and the kernels' workspace on the
  device);
- ``weights``: the base at the run's precision (``auto``: float32 on the CPU, bfloat16 on CUDA); in 4-bit (NF4, double
  quantisation) the linear layers of the blocks take 4.13 bits a weight (the 4-bit values, an 8-bit absmax per 64
  weights and a float32 one per 256 of those), everything else (embeddings, output layer, norms) the compute precision;
- ``adapters``: the LoRA weights (float32) of every adapter on the base (DPO: the policy, and the reference when it is
  an adapter; PPO: policy, value, reference, reward model, safety classifier) and their heads;
- ``gradients`` and ``optimizer``: float32 gradients and AdamW's two moments of the trained adapters;
- ``activations``: what autograd keeps for the backward pass. Per token and trained layer, about ``7·hidden +
  2·(key/value width) + 4·intermediate`` values for a block with LoRA on its linear layers: the residual stream, the
  norms' outputs (kept by the LoRA A matrices), query, key and value after the rotation and attention's output (kept
  by SDPA, which stores no score matrix), the MLP's gate, up, activation and product. Trained layers are those the
  backward reaches: every layer from the lowest adapted one up (``lora_top_layers``). With gradient checkpointing only
  each trained layer's input is kept, plus one layer recomputed at a time. An attention soft-cap (Gemma 2) keeps the
  scores and their soft-max per example, head and layer (the eager math, which no fused kernel offers);
- ``logits``: float32 logits where a loss needs them, at the start of the backward about three copies (the kept
  log-soft-max, its gradient, the logits' gradient), five with a final soft-cap; DPO computes them in checkpointed
  chunks of 1,024 tokens; the reward model and the safety classifier read a head instead;
- ``kv_cache`` (PPO): the sampler's keys and values for every rollout sequence at full length, and its prefill;
- ``scoring`` (PPO): scoring a rollout without gradients (log-probabilities and entropies of a chunk of rows);
- ``allocator`` (CPU): what glibc's allocator holds on to of a pass's freed tensors, which the process's peak resident
  size includes: about 1.1 times the activations a pass without checkpointing keeps (0.7 times with checkpointing,
  whose recomputed layers free their tensors in between), plus a copy of the logits; measured on SmolLM2 passes of
  512 to 1,792 tokens (reward model and SFT, with and without checkpointing), where it levels off by the third step.
  PPO with a value model (``gae``) counts it twice: the value's pass follows the policy's on every chunk.

Worst case throughout: every example at ``max_length`` (a preference pair: its prompt and both responses, up to
``2·max_length`` minus the shortest prompt the encoder keeps; a PPO sequence: ``max_length`` tokens, all but
``max_new_tokens`` of them prompt), and every token trained.

``available_mb``: CUDA's free memory (``nvidia-smi``) when the run goes to a CUDA device; otherwise the RAM the
kernel says is available (``MemAvailable`` in ``/proc/meminfo``); ``None`` ("unknown") where neither is known
(macOS, Windows). :attr:`FitEstimate.suggestions` lists settings that would make a run fit that does not: each change
alone first (a smaller batch, gradient checkpointing, 4-bit, a shorter ``max_length``, LoRA on the top layers only),
then together.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import ModelConfig
from .model_files import read_config, resolve_model_folder, tensor_shapes
from .train_checks import STAGES

MB = 2**20

# ---- constants (see the module docstring for where each comes from)
RUNTIME_CPU_MB = 420.0  # resident after importing the worker's libraries and loading a tokenizer
RUNTIME_CUDA_MB = 600.0  # CUDA context, cuBLAS workspace and the allocator's first blocks on the device
# What glibc's allocator keeps of a training pass's freed tensors (CPU), as a share of the activations a pass without
# checkpointing keeps: measured on SmolLM2 SFT and reward-model passes of 512-1,792 tokens, from the third step's
# peak resident size (it levels off by then).
RETAINED = 1.1
RETAINED_CHECKPOINTED = 0.7
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit values, absmax per 64 (8-bit), its scale per 256 blocks (float32)
LOGIT_COPIES = 3  # alive at the start of the backward; the allocator keeps about one more on the CPU
HEAD_TOKENS = 512  # engine.token_logprobs.HEAD_TOKENS: rows of logits alive at once where a loss needs them
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "F32": 4, "BF16": 2, "F16": 2, "F64": 8, "I64": 8,
               "I32": 4, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# ---------------------------------------------------------------------------------------------- the model's shape
@dataclass
class LinearLayer:
    """One linear layer inside a transformer block: its short name, layer index and sizes."""

    name: str
    layer: int
    in_features: int
    out_features: int


@dataclass
class ModelShape:
    """What the estimate needs to know of a model, from its config (and its safetensors headers)."""

    architecture: str
    model_type: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    params: int  # every weight
    linears: list[LinearLayer]  # the blocks' linear layers (what LoRA adapts and 4-bit quantises)
    attn_softcap: float | None = None
    final_softcap: float | None = None

    @property
    def linear_params(self) -> int:
        return sum(x.in_features * x.out_features for x in self.linears)

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def activation_values(self) -> int:
        """Values autograd keeps per token in one trained layer (see the module docstring)."""
        return 7 * self.hidden + 2 * self.kv_width + 4 * self.intermediate


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)\.weight$")


def _linears_from_config(cfg: dict[str, Any], layers: int, hidden: int, inter: int, heads: int, kv: int,
                         hd: int) -> list[LinearLayer]:
    """A Llama-style block's linear layers, for a model whose weights' headers are not at hand."""
    shapes = [("q_proj", hidden, heads * hd), ("k_proj", hidden, kv * hd), ("v_proj", hidden, kv * hd),
              ("o_proj", heads * hd, hidden), ("gate_proj", hidden, inter), ("up_proj", hidden, inter),
              ("down_proj", inter, hidden)]
    return [LinearLayer(n, i, a, b) for i in range(layers) for n, a, b in shapes]


def model_shape(folder: Path) -> ModelShape | None:
    """The shape of the model in ``folder``, or None when its config lacks the sizes."""
    cfg = read_config(folder)
    try:
        layers, hidden = int(cfg["num_hidden_layers"]), int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        vocab = int(cfg["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    kv = int(cfg.get("num_key_value_heads") or heads)
    hd = int(cfg.get("head_dim") or hidden // heads)
    inter = int(cfg.get("intermediate_size") or 4 * hidden)
    tensors = tensor_shapes(folder)
    linears: list[LinearLayer] = []
    params = 0
    for name, (_, shape) in tensors.items():
        params += math.prod(shape)
        found = _LAYER.search(name)
        if found and len(shape) == 2 and "embed" not in name:
            linears.append(LinearLayer(found.group(2).rsplit(".", 1)[-1], int(found.group(1)), shape[1], shape[0]))
    if not linears:
        linears = _linears_from_config(cfg, layers, hidden, inter, heads, kv, hd)
        embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings", True) else 2)
        params = sum(x.in_features * x.out_features for x in linears) + embeddings + layers * 2 * hidden
    archs = cfg.get("architectures") or ["?"]
    return ModelShape(
        architecture=str(archs[0]), model_type=str(cfg.get("model_type", "?")), layers=layers, hidden=hidden,
        intermediate=inter, heads=heads, kv_heads=kv, head_dim=hd, vocab=vocab, params=params, linears=linears,
        attn_softcap=cfg.get("attn_logit_softcapping"), final_softcap=cfg.get("final_logit_softcapping"),
    )


# ---------------------------------------------------------------------------------------------- device memory
@dataclass
class DeviceMemory:
    """Where a run goes and how much memory is free there (``available_mb`` None: unknown)."""

    device: str  # cpu | cuda | mps
    available_mb: float | None
    source: str  # how it was found out, for the user

    def describe(self) -> str:
        if self.available_mb is None:
            return f"{self.device}: free memory unknown ({self.source})"
        return f"{self.device}: {self.available_mb / 1024:.1f} GB free ({self.source})"


def _nvidia_free_mb(index: int) -> float | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.split()
        return float(out[index])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _meminfo_available_mb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_memory(device: str = "auto") -> DeviceMemory:
    """The device a run with ``device`` goes to (``auto``: CUDA when the NVIDIA driver is there, else the CPU, or
    Apple's MPS on macOS) and its free memory; read without torch."""
    name = (device or "auto").strip().lower()
    cuda = name.startswith("cuda") or (name == "auto" and Path("/dev/nvidiactl").exists()
                                       and os.environ.get("CUDA_VISIBLE_DEVICES", None) != "")
    if cuda:
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        free = _nvidia_free_mb(index)
        return DeviceMemory("cuda", free, f"nvidia-smi, GPU {index}" if free is not None else "nvidia-smi not usable")
    if name == "mps" or (name == "auto" and sys.platform == "darwin"):
        return DeviceMemory("mps", None, "shared with the system; not measured on macOS")
    free = _meminfo_available_mb()
    return DeviceMemory("cpu", free, "MemAvailable in /proc/meminfo" if free is not None else "not measured on this system")


# ---------------------------------------------------------------------------------------------- the estimate
@dataclass
class FitEstimate:
    """A run's estimated peak memory (MB, by part) beside the device's free memory."""

    stage: str
    model: str
    parts: dict[str, float]
    memory: DeviceMemory
    suggestions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def estimate_mb(self) -> float:
        return round(sum(self.parts.values()), 1)

    @property
    def fits(self) -> bool | None:
        if self.memory.available_mb is None:
            return None
        return self.estimate_mb <= self.memory.available_mb

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "model": self.model, "estimate_mb": self.estimate_mb,
                "parts_mb": {k: round(v, 1) for k, v in self.parts.items()}, "device": self.memory.device,
                "available_mb": None if self.memory.available_mb is None else round(self.memory.available_mb, 1),
                "memory_source": self.memory.source, "fits": self.fits, "suggestions": self.suggestions}

    def details(self) -> str:
        """The parts and, for a run that does not fit, the settings that would: a few lines for a tooltip."""
        lines = [f"{self.model}, {self.stage}: about {self.estimate_mb:,.0f} MB at its peak"]
        lines += [f"  {name}: {mb:,.0f} MB" for name, mb in self.parts.items() if mb >= 0.5]
        if self.suggestions:
            lines.append("Settings that would fit:")
            lines += ["  " + ", ".join(f"{k} {v}" for k, v in s["set"].items()) + f" (about {s['estimate_mb']:,.0f} MB)"
                      for s in self.suggestions]
        return "\n".join(lines)

    def refusal(self) -> str:
        """Why a run that does not fit is refused, with the settings that would fit (the CLI and the window)."""
        ideas = "; ".join(", ".join(f"{k}: {v}" for k, v in s["set"].items()) + f" (about {s['estimate_mb'] / 1024:.1f} GB)"
                          for s in self.suggestions)
        return f"{self.describe()} Settings that would fit: {ideas or 'none found'}."

    def describe(self) -> str:
        """One line: estimate, free memory, verdict."""
        need = f"needs about {self.estimate_mb / 1024:.1f} GB"
        if self.fits is None:
            return f"This run {need}; {self.memory.describe()}."
        verdict = "fits" if self.fits else "does NOT fit"
        return f"This run {need} and {verdict}: {self.memory.describe()}."


def _bytes(dtype: str, device: str) -> int:
    if dtype == "auto":
        return 2 if device == "cuda" else 4
    return DTYPE_BYTES.get(dtype, 4)


def _quantized(cfg: Any, device: str) -> bool:
    q = getattr(cfg, "quantize", "auto")
    return q == "4bit" or (q == "auto" and device == "cuda")


def _adapted(shape: ModelShape, cfg: Any) -> list[LinearLayer]:
    """The linear layers a fresh LoRA adapter of ``cfg`` covers."""
    targets = list(getattr(cfg, "lora_targets", ["all-linear"]) or ["all-linear"])
    top = getattr(cfg, "lora_top_layers", None)
    first = max(0, shape.layers - top) if top else 0
    every = targets == ["all-linear"]
    return [x for x in shape.linears if x.layer >= first and (every or x.name in targets)]


def _lora_params(shape: ModelShape, cfg: Any) -> int:
    r = int(getattr(cfg, "lora_r", 16))
    return sum(r * (x.in_features + x.out_features) for x in _adapted(shape, cfg))


def _trained_layers(shape: ModelShape, cfg: Any) -> int:
    adapted = _adapted(shape, cfg)
    return shape.layers - min((x.layer for x in adapted), default=shape.layers)


def _pair_tokens(max_length: int) -> int:
    """Tokens of a packed preference pair at its longest (engine.rm_data's encoder keeps at least this much prompt
    when it cuts responses)."""
    min_prompt = max(1, min(64, max_length // 4))
    return 2 * max_length - min_prompt


def _softcap_scores(shape: ModelShape, sequences: int, length: int, layers: int, b: int) -> float:
    """Bytes of kept attention scores under a soft-cap: per sequence, head and layer, scores and soft-max."""
    if not shape.attn_softcap:
        return 0.0
    return 2.0 * sequences * shape.heads * length * length * b * layers


def _backward_pass(shape: ModelShape, cfg: Any, device: str, b: int, tokens: int, sequences: int, length: int,
                   checkpointing: bool, logit_tokens: int = 0) -> dict[str, float]:
    """Activations, logits and the allocator's share (bytes) of one forward and backward over ``tokens`` tokens in
    ``sequences`` sequences (``logit_tokens`` of them through the output layer)."""
    layers = _trained_layers(shape, cfg)
    full = layers * shape.activation_values() * tokens * b  # what a pass without checkpointing keeps
    if checkpointing:
        kept = (layers * shape.hidden * tokens * b + shape.activation_values() * tokens * b
                + _softcap_scores(shape, sequences, length, 1, b))
    else:
        kept = full + _softcap_scores(shape, sequences, length, layers, b)
    logit_copy = logit_tokens * shape.vocab * 4.0
    out = {"activations": kept + tokens * shape.hidden * b,  # + the final norm's output
           "logits": (LOGIT_COPIES + (2 if shape.final_softcap else 0)) * logit_copy}
    if device == "cpu":
        out["allocator"] = (RETAINED_CHECKPOINTED if checkpointing else RETAINED) * full + logit_copy
    return out


def _static(shape: ModelShape, cfg: Any, device: str, trained: int, frozen: int, heads: int = 0) -> dict[str, float]:
    """Runtime, weights, adapters, gradients and optimizer (bytes); ``trained``/``frozen``: LoRA parameters."""
    b = _bytes(getattr(cfg, "dtype", "auto"), device)
    if _quantized(cfg, device):
        lin = shape.linear_params
        weights = lin * NF4_BITS / 8 + (shape.params - lin) * b
    else:
        weights = shape.params * b
    return {
        "runtime": (RUNTIME_CUDA_MB if device == "cuda" else RUNTIME_CPU_MB) * MB,
        "weights": float(weights),
        "adapters": 4.0 * (trained + frozen + heads),
        "gradients": 4.0 * trained,
        "optimizer": 8.0 * trained,
    }


def _frozen_adapter_params(path: str | None) -> int:
    """LoRA parameters of a saved adapter folder (its safetensors header), 0 when there is none."""
    if not path:
        return 0
    folder = Path(path).expanduser()
    return sum(math.prod(shape) for _, shape in tensor_shapes(folder).values()) if folder.is_dir() else 0


def _parts(stage: str, shape: ModelShape, cfg: Any, device: str) -> dict[str, float]:
    b = _bytes(getattr(cfg, "dtype", "auto"), device)
    lora = _lora_params(shape, cfg)
    ckpt = bool(getattr(cfg, "gradient_checkpointing", False))
    bs, length = int(cfg.batch_size), int(cfg.max_length)
    base_adapter = _frozen_adapter_params(getattr(cfg, "adapter_from", None))
    trained = base_adapter or lora
    per_pass = int(getattr(cfg, "tokens_per_pass", 0) or 0)

    def pass_tokens(example: int) -> tuple[int, int]:
        """(tokens, examples) of one forward and backward: a micro-batch beyond ``tokens_per_pass`` tokens runs as
        several passes (one example at least)."""
        total = bs * example
        tokens = total if per_pass <= 0 else max(example, min(total, per_pass))
        return tokens, max(1, tokens // example)

    if stage == "sft":
        tokens, examples = pass_tokens(length)
        parts = _static(shape, cfg, device, trained, 0)
        # the output layer runs HEAD_TOKENS rows at a time (engine.token_logprobs)
        parts.update(_backward_pass(shape, cfg, device, b, tokens, examples, length, ckpt,
                                    logit_tokens=min(tokens, HEAD_TOKENS)))
    elif stage in ("rm", "safety"):
        per = _pair_tokens(length) if stage == "rm" else length
        tokens, examples = pass_tokens(per)
        parts = _static(shape, cfg, device, trained, 0, heads=shape.hidden * 16)
        parts.update(_backward_pass(shape, cfg, device, b, tokens, 2 * examples if stage == "rm" else examples, length,
                                    ckpt))
    elif stage == "dpo":
        tokens, examples = pass_tokens(_pair_tokens(length))
        reference = _frozen_adapter_params(getattr(cfg, "reference_adapter", None) or getattr(cfg, "adapter_from", None))
        parts = _static(shape, cfg, device, trained, reference)
        parts.update(_backward_pass(shape, cfg, device, b, tokens, 2 * examples, length, ckpt,
                                    logit_tokens=min(tokens, HEAD_TOKENS)))
    elif stage == "ppo":
        parts = _ppo_parts(shape, cfg, device, b, trained, lora)
    else:
        raise ValueError(f"no memory estimate for {stage!r} runs")
    return parts


def _ppo_parts(shape: ModelShape, cfg: Any, device: str, b: int, policy: int, lora: int) -> dict[str, float]:
    """PPO: every role on the shared base; the peak is the largest of sampling, scoring and the update."""
    value = lora if cfg.advantage_estimator == "gae" else 0
    reward_lora = _frozen_adapter_params(cfg.reward_model) if not str(cfg.reward_model or "").startswith("rule:") else 0
    frozen = (_frozen_adapter_params(cfg.reference_adapter or cfg.adapter_from) + reward_lora
              + _frozen_adapter_params(cfg.safety_model))
    parts = _static(shape, cfg, device, policy + value, frozen, heads=3 * shape.hidden)
    new = int(cfg.max_new_tokens)
    prompt = int(cfg.max_prompt_tokens or max(8, cfg.max_length - new))
    length = prompt + new
    rows = int(cfg.rollout_batch_size) * int(cfg.samples_per_prompt)
    # sampling: the key/value cache at full length, the prefill's largest layer and one step's logits
    kv = 2.0 * shape.layers * shape.kv_width * length * rows * b
    prefill = rows * prompt * (2 * shape.hidden + 2 * shape.intermediate) * b
    sampling = kv + prefill + 2.0 * rows * shape.vocab * 4
    # scoring: chunks of batch_size rows without gradients, the logits and soft-max of their responses
    chunk = min(rows, int(cfg.batch_size))
    scoring = 3.0 * chunk * new * shape.vocab * 4 + chunk * length * (2 * shape.hidden + 2 * shape.intermediate) * b
    # the update: at most backward_rows sequences through one forward/backward (policy, then value)
    back = int(cfg.backward_rows) or int(cfg.batch_size)
    back = min(back, int(cfg.batch_size))
    update = _backward_pass(shape, cfg, device, b, back * length, back, length, False,
                            logit_tokens=min(back * new, HEAD_TOKENS))
    if value and "allocator" in update:
        # gae: the value's forward and backward follow the policy's on every chunk, and the allocator keeps the
        # freed tensors of both passes (measured on SmolLM2: 1.5 GB more at the peak than rloo at equal chunks)
        update["allocator"] += _backward_pass(shape, cfg, device, b, back * length, back, length, False)["allocator"]
    # the rollout itself (sequences, masks, log-probabilities, values, advantages) stays alive throughout
    parts["experience"] = float(rows * length * (8 + 6 * 4))
    phase = max(sampling, scoring, sum(update.values()))
    if phase == sampling:
        parts["kv_cache"] = sampling
    elif phase == scoring:
        parts["scoring"] = scoring
    else:
        parts.update(update)
    return parts


def _suggestion_candidates(stage: str, cfg: Any, device: str, shape: ModelShape) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    bs = int(cfg.batch_size)
    # a smaller micro-batch with more accumulation keeps the examples per optimizer step
    for smaller in sorted({bs // 2, bs // 4, 1}, reverse=True):
        if 1 <= smaller < bs:
            out.append({"batch_size": smaller, "grad_accum": int(cfg.grad_accum) * max(1, bs // smaller)})
    if stage != "ppo" and not getattr(cfg, "gradient_checkpointing", False):
        out.append({"gradient_checkpointing": True})
    if not _quantized(cfg, device):
        out.append({"quantize": "4bit"})
    for shorter in (cfg.max_length // 2, cfg.max_length // 4):
        if shorter >= 64:
            out.append({"max_length": shorter})
    top = getattr(cfg, "lora_top_layers", None) or shape.layers
    for fewer in (shape.layers // 2, shape.layers // 4):
        if 1 <= fewer < top:
            out.append({"lora_top_layers": fewer})
    return out


def _replace(cfg: Any, change: dict[str, Any]) -> Any:
    return dataclasses.replace(cfg, **change)


def _suggestions(stage: str, shape: ModelShape, cfg: Any, memory: DeviceMemory) -> list[dict[str, Any]]:
    """Setting changes that make the run fit: single changes that do, else the first combination that does."""
    available = memory.available_mb
    if available is None:
        return []
    single = _suggestion_candidates(stage, cfg, memory.device, shape)
    found = []
    for change in single:
        mb = sum(_parts(stage, shape, _replace(cfg, change), memory.device).values()) / MB
        if mb <= available:
            found.append({"set": change, "estimate_mb": round(mb, 1)})
    if found:
        return found
    combined: dict[str, Any] = {}
    for change in single:
        # the smallest of each kind wins: later candidates of a kind are smaller
        combined.update(change)
        mb = sum(_parts(stage, shape, _replace(cfg, combined), memory.device).values()) / MB
        if mb <= available:
            return [{"set": dict(combined), "estimate_mb": round(mb, 1)}]
    return []


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def estimate(stage: str, config: ModelConfig, *, memory: DeviceMemory | None = None) -> FitEstimate | None:
    """The run's estimated peak memory, or None when the model's files are not here to read (a hub id not in the
    local cache, a GGUF file not yet converted) or the stage trains nothing."""
    if stage not in STAGES:
        return None
    folder = resolve_model_folder(config.base_model)
    shape = model_shape(folder) if folder is not None else None
    if shape is None:
        return None
    memory = memory or device_memory(config.device)
    parts = {k: v / MB for k, v in _parts(stage, shape, config, memory.device).items() if v}
    est = FitEstimate(stage, f"{shape.architecture} ({shape.model_type}), {_count(shape.params)} parameters",
                      parts, memory)
    if est.fits is False:
        est.suggestions = _suggestions(stage, shape, config, memory)
    return est
