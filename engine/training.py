"""Pieces the training stages share (the skeleton that uses them is :mod:`engine.trainers.base`): the accelerator,
the learning-rate schedule, the data order, model loading for training, finite-loss checks, memory release.

- :func:`make_accelerator`: an ``accelerate.Accelerator`` that also works under ``accelerate launch`` with
  several CPU processes (gloo);
- :func:`warmup_cosine`: linear warm-up then cosine decay, as a ``LambdaLR`` (its state dict is just the step
  count, so a checkpoint restores it exactly);
- :class:`DataOrder`: a reproducible stream of example indices, one fresh permutation per epoch from the seed, that
  can be saved into and restored from a checkpoint at any step; :class:`GroupedOrder`, the same with each epoch's
  order grouping examples of similar length;
- :func:`load_for_training`: base model + tokenizer (``engine.models``) + a LoRA adapter (fresh, or continued from
  ``adapter_from``); :func:`load_headed_for_training` and :func:`add_training_head` make it a
  :class:`~engine.reward_model.HeadedModel` with the head a reward model or classifier trains;
- :func:`release_free_memory`: hand the C allocator's freed pages back to the system after an optimizer step.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.configs import BaseRunConfig, ModelConfig

from .devices import resolve_device
from .jobs import JobError
from .reward_model import HEAD_FILE, HeadedModel
from .rm_data import length_grouped_order

# The adapter a stage trains on a model of its own (PPO and DPO name theirs after their roles).
ADAPTER = "default"


def make_accelerator(cfg: ModelConfig):
    from accelerate import Accelerator

    return Accelerator(cpu=resolve_device(cfg.device).type == "cpu")


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

    def _draw(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def _permutation(self, epoch: int) -> list[int]:
        if epoch != self._perm_epoch:
            self._perm = self._draw(epoch)
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

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved :meth:`state` (of an order over as many examples)."""
        if state["n"] != self.n:
            raise JobError(f"the checkpoint was made on {state['n']} training examples, this run has {self.n}; "
                           "resume needs the same snapshot and settings")
        self.seed, self.consumed = int(state["seed"]), int(state["consumed"])
        self._perm_epoch, self._perm = int(state["epoch"]), list(state["permutation"])

    @classmethod
    def from_state(cls, state: dict[str, Any], n: int) -> "DataOrder":
        order = cls(n=n, seed=int(state["seed"]))
        order.restore(state)
        return order


class GroupedOrder(DataOrder):
    """A :class:`DataOrder` whose every epoch is a length-grouped shuffle (``engine.rm_data.length_grouped_order``):
    batches of ``batch_size`` hold examples of similar length, the batches in random order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, consumed: int = 0):
        super().__init__(n=len(lengths), seed=seed, consumed=consumed)
        self.lengths, self.batch_size = list(lengths), batch_size

    def _draw(self, epoch: int) -> list[int]:
        return length_grouped_order(self.lengths, self.batch_size, self.seed * 1_000_003 + epoch)


def load_for_training(cfg: BaseRunConfig, device: torch.device, *, attn_implementation: str | None = None):
    """(peft model with a trainable LoRA adapter named ``default``, tokenizer) on ``device``: a fresh adapter from
    the config's LoRA settings (initialised from the config's seed), or the ``adapter_from`` one continued. Loading
    goes through ``engine.models`` (hub ids, folders, GGUF, the bundled model; no pickles; remote code only when
    allowed). Gradient checkpointing is the training skeleton's to switch on."""
    from .lora import LoraSettings, attach_lora, load_adapter
    from .models import load_model

    loaded = load_model(cfg.base_model, device=device, dtype=cfg.dtype, quantize=cfg.quantize,
                        trust_remote_code=cfg.trust_remote_code)
    model = loaded.model
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    model.config.use_cache = False
    if cfg.adapter_from:
        model = load_adapter(model, cfg.adapter_from, adapter_name=ADAPTER, trainable=True)
    else:
        torch.manual_seed(cfg.seed)
        model = attach_lora(model, LoraSettings.from_run_config(cfg, model), adapter_name=ADAPTER)
    return model, loaded.tokenizer


def load_headed_for_training(cfg: BaseRunConfig, device: torch.device) -> tuple[HeadedModel, Any]:
    """:func:`load_for_training` as a :class:`HeadedModel` whose adapter ``default`` trains; no head yet
    (:func:`add_training_head`)."""
    model, tokenizer = load_for_training(cfg, device)
    hm = HeadedModel(model)
    hm.adopt_adapter(ADAPTER, trainable=True)
    return hm, tokenizer


def add_training_head(hm: HeadedModel, cfg: BaseRunConfig, *, out_features: int = 1, kind: str = "reward",
                      labels: Sequence[str] = ()) -> None:
    """The head adapter ``default`` trains with: ``adapter_from``'s when that folder has one (it must have
    ``out_features`` outputs), else a fresh one (an SFT adapter gets a fresh head)."""
    if cfg.adapter_from and (Path(cfg.adapter_from) / HEAD_FILE).is_file():
        hm.load_head(ADAPTER, cfg.adapter_from)
        if hm.heads[ADAPTER].out_features != out_features:
            raise JobError(f"{cfg.adapter_from}: its head has {hm.heads[ADAPTER].out_features} output(s), this job "
                           f"needs {out_features}")
        hm.head_kind[ADAPTER] = kind
        hm.head_labels[ADAPTER] = list(labels)
    else:
        hm.add_head(ADAPTER, out_features=out_features, kind=kind, labels=labels)
    hm.adopt_adapter(ADAPTER, trainable=True)
    hm.activate(ADAPTER)


def check_finite(value: float, step: int, what: str = "training loss") -> None:
    if not math.isfinite(value):
        raise JobError(f"the {what} became {value} at step {step}; lower the learning rate (lr) or check the data "
                       "for empty or broken examples", kind="nan")


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
