"""A model reference's files, read without torch or transformers, so the command line and the window can tell what a
run will need before a worker starts: the model's ``config.json``, the shapes of its weights, and whether the
trainers can train its architecture at all.

- :func:`resolve_model_folder`: the folder a model reference stands for, as far as it exists here: the bundled
  model's conversion in the cache, a folder (an adapter folder: the base its ``adapter_config.json`` records), a
  ``.gguf`` file's conversion in the cache (there once a run has used it), a hub id's snapshot in the local Hugging
  Face cache. ``None`` when the files are not here; the engine says why when it loads.
- :func:`read_config`: ``config.json``, with a multimodal model's ``text_config`` taking the place of the top level.
- :func:`tensor_shapes`: every tensor's dtype and shape, from the safetensors headers (each file starts with the
  length of a JSON table of its tensors, then the table), without reading the weights.
- :func:`training_refusal`: the reason an architecture cannot be trained here, from its config alone; the train
  commands and the window refuse it before a run row exists (the engine's own check, :mod:`engine.families`, runs
  again on the loaded model for what a config cannot tell).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from .paths import BUNDLED_MODEL_NAME, bundled_model_dir, gguf_cache_dir

# Causal language models of transformers whose attention does not go through its attention interface (their
# classes have ``_supports_attention_backend = False``: state-space and hybrid models, and older implementations
# with attention code of their own). The trainers' packed layouts replace attention through that interface, so these
# would silently attend across the examples of a packed row. transformers is not importable here, so the table is a
# copy; tests/workbench/test_model_files.py compares it with the installed transformers.
ATTENTION_OUTSIDE_INTERFACE = frozenset({
    "bailing_hybrid", "bamba", "bart", "big_bird", "bigbird_pegasus", "biogpt", "blenderbot", "blenderbot-small",
    "bloom", "blt", "cpmant", "falcon", "falcon_h1", "falcon_mamba", "git", "gpt_neo", "gpt_neox_japanese",
    "inkling2_loop_text", "inkling2_text", "inkling_text", "jamba", "kimi_linear", "lara_mini", "mamba", "mamba2",
    "marian", "mbart", "megatron-bert", "mpt", "musicgen", "musicgen_melody", "mvp", "nemotron_h", "olmo_hybrid",
    "openai-gpt", "pegasus", "plbart", "prophetnet", "qwen3_5", "qwen3_5_moe", "qwen3_5_moe_text", "qwen3_5_text",
    "qwen3_next", "qwen4_exp", "qwen4_exp_text", "reformer", "rembert", "roformer", "rwkv", "stablelm", "trocr",
    "whisper", "xglm", "xlm", "xlnet", "xlstm", "zamba2",
})
# Class names of a config's ``architectures`` that are language models the trainers can load as causal LMs.
_CAUSAL_ARCHITECTURE = re.compile(r"(ForCausalLM|LMHeadModel|ForConditionalGeneration)$")
TRAINABLE_FAMILIES = ("Llama", "Mistral", "Qwen2", "Qwen3", "Gemma 2 and 3", "Phi-3")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ["HF_HOME"]) if os.environ.get("HF_HOME") else Path.home() / ".cache" / "huggingface"
    return home / "hub"


def _hub_snapshot(repo_id: str) -> Path | None:
    repo = _hub_cache() / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
        return snapshots[-1] if snapshots else None
    folder = repo / "snapshots" / commit
    return folder if folder.is_dir() else None


def resolve_model_folder(ref: str | None, _depth: int = 0) -> Path | None:
    """The local folder holding ``ref``'s ``config.json`` (see the module docstring), or None."""
    ref = (ref or "").strip()
    if not ref or _depth > 3:
        return None
    if ref.startswith("bundled:"):
        folder = bundled_model_dir() if ref.split(":", 1)[1] == BUNDLED_MODEL_NAME else None
        return folder if folder is not None and (folder / "config.json").is_file() else None
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        folder = gguf_cache_dir(path)
        return folder if (folder / "config.json").is_file() else None
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        base = _json(path / "adapter_config.json").get("base_model_name_or_path")
        return resolve_model_folder(str(base), _depth + 1) if base else None
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", ref) and not path.exists():
        folder = _hub_snapshot(ref)
        return folder if folder is not None and (folder / "config.json").is_file() else None
    return None


def read_config(folder: Path) -> dict[str, Any]:
    """The model's config as a dict; for a multimodal config, its text model's settings over the top level."""
    config = _json(Path(folder) / "config.json")
    text = config.get("text_config")
    if isinstance(text, dict):
        return {**config, **text, "architectures": config.get("architectures"),
                "outer_model_type": config.get("model_type")}
    return config


def tensor_shapes(folder: Path) -> dict[str, tuple[str, list[int]]]:
    """name → (safetensors dtype such as ``F32``/``BF16``, shape) of every tensor in the folder's safetensors
    files; empty when there are none or a header cannot be read."""
    shapes: dict[str, tuple[str, list[int]]] = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        try:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > 100 * 2**20:
                    return {}
                header = json.loads(fh.read(n))
        except (OSError, struct.error, ValueError):
            return {}
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                shapes[name] = (str(info.get("dtype", "")), [int(x) for x in info.get("shape", [])])
    return shapes


def architecture_name(config: dict[str, Any]) -> str:
    """``LlamaForCausalLM (llama)``, or what the config has of it."""
    archs = config.get("architectures") or []
    name = archs[0] if archs else "a model"
    return f"{name} ({config.get('outer_model_type') or config.get('model_type', '?')})"


def training_refusal(config: dict[str, Any]) -> str | None:
    """Why the trainers cannot train the architecture of ``config`` (a :func:`read_config` dict), or None."""
    if not config:
        return None
    name = architecture_name(config)
    if config.get("is_encoder_decoder"):
        why = "it is an encoder-decoder model; the trainers train decoder-only language models"
    elif config.get("model_type") in ATTENTION_OUTSIDE_INTERFACE or config.get("outer_model_type") in ATTENTION_OUTSIDE_INTERFACE:
        why = ("its attention does not go through transformers' attention interface, which the packed training "
               "layouts replace")
    elif config.get("architectures") and not any(_CAUSAL_ARCHITECTURE.search(str(a)) for a in config["architectures"]):
        why = "it is not a causal language model (its config names no *ForCausalLM class)"
    else:
        return None
    return refusal_message(name, why)


def model_refusal(ref: str | None) -> str | None:
    """:func:`training_refusal` for a model reference whose files are here (None when they are not, or when it
    trains)."""
    folder = resolve_model_folder(ref)
    return training_refusal(read_config(folder)) if folder is not None else None


def refusal_message(name: str, why: str) -> str:
    """How a refused architecture is named to the user (the engine's own check words it the same way)."""
    return (f"the architecture {name} cannot be trained here: {why}. Families that train: "
            f"{', '.join(TRAINABLE_FAMILIES)}, and other decoder-only models whose attention transformers routes "
            "through its attention interface")
