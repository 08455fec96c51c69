"""Which device and precision a model runs on: CUDA, then Apple MPS, then the CPU; bf16 where the GPU does it well;
and how much memory the process has used at most.

Both are chosen automatically and overridable by name ("cpu", "cuda", "cuda:1", "mps"; "float32", "bfloat16",
"float16"), so a run config can pin them and the choice is recorded in plain text.
"""

from __future__ import annotations

import sys

import torch

from .model_errors import ModelError

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; any other name is checked to exist on this machine."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ModelError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but this machine has no CUDA GPU usable by torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelError(f"device {device!r} asked for, but there are only {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ModelError(f"device {device!r} asked for, but Apple MPS is not available here")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"``: bf16 on a CUDA GPU that supports it, fp16 on an older CUDA GPU, fp32 on MPS and the CPU (where
    half precision is slow or numerically fragile for training)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or "auto").strip().lower().removeprefix("torch.")
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise ModelError(f"unknown precision {dtype!r} (use auto, float32, bfloat16 or float16)")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def peak_mem_mb() -> float:
    """Peak memory of this process in MB: its peak resident size (Linux reports KiB, macOS bytes; 0 where there is
    no ``resource`` module, on Windows), or the peak CUDA allocation when that is larger."""
    try:
        import resource
    except ImportError:
        host = 0.0
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        host = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    if torch.cuda.is_available():
        return max(host, torch.cuda.max_memory_allocated() / 2**20)
    return host
