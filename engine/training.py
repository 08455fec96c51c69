"""Pieces every LoRA trainer shares: the accelerator, the learning-rate schedule, the data order, model loading for
training, throughput and memory figures.

- :func:`make_accelerator`: an ``accelerate.Accelerator`` that also works under ``accelerate launch`` with
  several CPU processes (gloo);
- :func:`warmup_cosine`: linear warm-up then cosine decay, as a ``LambdaLR`` (its state dict is just the step
  count, so a checkpoint restores it exactly);
- :class:`DataOrder`: a reproducible stream of example indices, one fresh permutation per epoch from the seed, that
  can be saved into and restored from a checkpoint at any step;
- :func:`load_for_training`: base model + tokenizer (``engine.models``) + a LoRA adapter (fresh, or continued from
  ``adapter_from``);
- :func:`release_free_memory`: hand the C allocator's freed pages back to the system after an optimizer step.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench.configs import BaseRunConfig, ModelConfig

from .jobs import JobError


def make_accelerator(cfg: ModelConfig):
    from accelerate import Accelerator

    device = (cfg.device or "auto").lower()
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available() and not _mps())
    return Accelerator(cpu=cpu)


def _mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float, min_ratio: float = 0.0):
    warm = int(math.ceil(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total_steps - warm)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class DataOrder:
    """Indices of ``n`` examples, epoch after epoch, each epoch a permutation drawn from ``seed`` and the epoch."""

    n: int
    seed: int
    consumed: int = 0
    _perm_epoch: int = -1
    _perm: list[int] = field(default_factory=list)

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=g).tolist()
            self._perm_epoch = epoch
        return self._perm

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            epoch, i = divmod(self.consumed, self.n)
            out.append(self._permutation(epoch)[i])
            self.consumed += 1
        return out

    @property
    def epoch(self) -> float:
        return self.consumed / self.n

    def state(self) -> dict[str, Any]:
        epoch = self.consumed // self.n
        return {"n": self.n, "seed": self.seed, "consumed": self.consumed, "epoch": epoch,
                "permutation": self._permutation(epoch)}

    @classmethod
    def from_state(cls, state: dict[str, Any], n: int) -> "DataOrder":
        if state["n"] != n:
            raise JobError(f"the checkpoint was made on {state['n']} training examples, this run has {n}; "
                           "resume needs the same snapshot and settings")
        order = cls(n=n, seed=int(state["seed"]), consumed=int(state["consumed"]))
        order._perm_epoch, order._perm = int(state["epoch"]), list(state["permutation"])
        return order


def load_for_training(cfg: BaseRunConfig, device: torch.device, *, attn_implementation: str | None = None):
    """(peft model with a trainable LoRA adapter named ``default``, tokenizer) on ``device``: a fresh adapter from
    the config's LoRA settings, or the ``adapter_from`` one continued. Loading goes through ``engine.models`` (hub
    ids, folders, GGUF, the bundled model; no pickles; remote code only when allowed)."""
    from .lora import LoraSettings, attach_lora, load_adapter
    from .models import load_model

    loaded = load_model(cfg.base_model, device=device, dtype=cfg.dtype, quantize=cfg.quantize,
                        trust_remote_code=cfg.trust_remote_code)
    model = loaded.model
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    model.config.use_cache = False
    settings = LoraSettings.from_run_config(cfg, model)
    if cfg.adapter_from:
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model = load_adapter(model, cfg.adapter_from, trainable=True)
    else:
        model = attach_lora(model, settings, gradient_checkpointing=cfg.gradient_checkpointing)
    return model, loaded.tokenizer


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def check_finite(value: float, step: int, what: str = "training loss") -> None:
    if not math.isfinite(value):
        raise JobError(f"the {what} became {value} at step {step}; lower the learning rate (lr) or check the data "
                       "for empty or broken examples", kind="nan")


def cpu_count() -> int:
    return os.cpu_count() or 1


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere (macOS, Windows, musl) or if the symbol is missing."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


# A trim is not free: the call itself (~0.3-0.5 s when ~5 GB go back) and above all the next step, which faults
# and zeroes all that memory again (+2.5 s of system time on a ~12 s SmolLM2-135M step): ~25 % of one step. Every
# 10th step keeps that near 2 % while the resident size still comes back down regularly.
RELEASE_EVERY = 10


def release_free_memory(step: int | None = None, every: int = RELEASE_EVERY) -> bool:
    """Give the memory glibc's allocator keeps after a training step back to the system; True if it ran.

    The activations and gradients of a step are freed into glibc's arenas, which keep them, so the process's
    resident size stays at several times what is live (3.4-3.8 GB after a step with ~1.1 GB live). With ``step``
    (the number of optimizer steps done), this only acts every ``every`` steps (see ``RELEASE_EVERY``); without it,
    always. A no-op off glibc."""
    if step is not None and step % max(1, every):
        return False
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
