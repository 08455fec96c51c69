"""Checkpoints a run can continue from exactly: adapter, optimizer, scheduler, RNG states, step and data order.

Layout of ``RUN_DIR/checkpoints/step-00000042/``:

- ``adapter/``: the trainable weights, written by ``save_pretrained`` of what the caller passes (a peft model, or
  a stage's own writer: a reward model's adapter folder carries its head, PPO's writer puts the value adapter and
  head in ``value/`` beside it); safetensors only;
- ``extra.safetensors``: other tensors a stage keeps (e.g. PPO's sampling generators), when any;
- ``optimizer.pt`` / ``scheduler.pt``: their state dicts, read back with ``torch.load(weights_only=True)`` so nothing
  is ever unpickled beyond tensors and plain containers;
- ``rng.pt``: Python, NumPy and torch (CPU and CUDA) generator states;
- ``state.json``: the loop's position (step, tokens, training time, data order, best metric) and, under
  ``stage``, the stage's own state (PPO's KL coefficient and reward moments, the classifier's categories).

A checkpoint is written to a temporary folder and renamed into place, so a crash never leaves a half checkpoint
that looks complete. :func:`prune` keeps the last N plus the best one.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from . import faults

PREFIX = "step-"
BEST_FILE = "best.json"


def checkpoint_path(root: Path, step: int) -> Path:
    return Path(root) / f"{PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
    rng: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint for ``step`` atomically; returns its folder. ``model`` is a peft model (or anything with
    ``save_pretrained``). ``rng`` defaults to the current generator states."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(root, step)
    tmp = root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        model.save_pretrained(tmp / "adapter")
        if extra_tensors:
            save_file({k: v.detach().contiguous().cpu() for k, v in extra_tensors.items()}, tmp / "extra.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng if rng is not None else rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1), encoding="utf-8")
        faults.strike("checkpoint")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        from .jobs import JobError

        last = latest_checkpoint(root)
        kept = f"the last complete checkpoint ({last.name}) is intact" if last else "no earlier checkpoint exists"
        full = e.errno == errno.ENOSPC
        raise JobError(f"{'no space left on the disk' if full else e.strerror or e} while writing the checkpoint of "
                       f"step {step} in {root}: it was not kept; {kept}. Free some space, then resume the run",
                       kind="disk" if full else "input") from e
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def remove_partial_checkpoints(root: Path) -> list[Path]:
    """Delete the temporary folders of checkpoints whose writing was interrupted (a killed worker)."""
    root = Path(root)
    gone = [p for p in root.glob(".tmp-*") if p.is_dir()] if root.is_dir() else []
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def load_checkpoint(
    path: Path,
    *,
    model: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
    adapter_name: str = "default",
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load a checkpoint into an already-built optimizer and scheduler, and into a peft model's adapter
    ``adapter_name`` when ``model`` is given (a stage with weights of its own loads them itself); restore the RNG
    states. Returns (trainer state, extra tensors)."""
    from safetensors.torch import load_file

    from .lora import load_adapter_weights

    path = Path(path)
    if model is not None:
        load_adapter_weights(model, path / "adapter", adapter_name)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if restore_rng:
        set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    extra = load_file(path / "extra.safetensors") if (path / "extra.safetensors").exists() else {}
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    return state, extra


def mark_best(root: Path, path: Path, metric: float, name: str) -> None:
    (Path(root) / BEST_FILE).write_text(json.dumps({"path": Path(path).name, "metric": metric, "name": name}), encoding="utf-8")


def best_checkpoint(root: Path) -> tuple[Path, float] | None:
    f = Path(root) / BEST_FILE
    if not f.exists():
        return None
    info = json.loads(f.read_text(encoding="utf-8"))
    p = Path(root) / info["path"]
    return (p, float(info["metric"])) if p.exists() else None


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the last ``keep`` checkpoints and the best one; returns what was deleted."""
    found = list_checkpoints(root)
    best = best_checkpoint(root)
    protected = set(found[-keep:]) if keep > 0 else set()
    if best is not None:
        protected.add(best[0])
    removed = []
    for p in found:
        if p not in protected:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
