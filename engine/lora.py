"""LoRA adapters through peft: the settings a run config carries, attaching a fresh adapter, loading a saved one.

A saved adapter is loaded only from safetensors (``adapter_model.safetensors``): a folder with only
``adapter_model.bin`` is refused rather than unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model_errors import ModelError

if TYPE_CHECKING:
    from workbench.configs import BaseRunConfig


@dataclass
class LoraSettings:
    """Low-rank adapter settings (peft ``LoraConfig``); the defaults suit small chat models."""

    r: int = field(default=16, metadata={"help": "Rank of the low-rank update: capacity of the adapter (8–64 usual)."})
    alpha: int = field(default=32, metadata={"help": "Scaling numerator: the update is scaled by alpha / r (2·r is usual)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter's input during training; off by "
                                                   "default (as TRL's reward trainer) because it costs time and "
                                                   "memory (a mask and a kept copy per adapted layer)."})
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "Layers that get an adapter: 'all-linear' (every linear layer except the output head) "
                          "or a list of module names such as ['q_proj', 'v_proj']."},
    )
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r) instead of alpha / r."})
    layers: list[int] | None = field(
        default=None,
        metadata={"help": "Indices of the transformer layers that get adapters (none: every layer). With only the top "
                          "layers adapted, the backward pass stops below the lowest of them."},
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ModelError(f"LoRA rank must be at least 1, not {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"LoRA dropout must be in [0, 1), not {self.dropout}")
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_run_config(cls, cfg: BaseRunConfig, model: Any = None) -> "LoraSettings":
        """The settings of a run config (``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_targets``,
        ``lora_top_layers``); ``model`` (its ``config.num_hidden_layers``) resolves ``lora_top_layers``."""
        targets = cfg.lora_targets
        top = cfg.lora_top_layers
        layers = None
        if top:
            num_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
            if not num_layers:
                raise ModelError("lora_top_layers is set but the model does not say how many layers it has")
            layers = list(range(max(0, num_layers - top), num_layers))
        all_linear = targets in (["all-linear"], "all-linear")
        if all_linear and layers is not None:
            # peft takes a layer selection only with named targets, so name every linear layer of the blocks
            targets, all_linear = linear_module_names(model), False
        return cls(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                   target_modules="all-linear" if all_linear else list(targets), layers=layers)

    def peft_config(self, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            use_rslora=self.use_rslora,
            layers_to_transform=list(self.layers) if self.layers is not None else None,
            bias="none",
            task_type=task_type,
            modules_to_save=modules_to_save,
        )


def linear_module_names(model) -> list[str]:
    """The short names of the linear layers inside the model's blocks (what 'all-linear' adapts): every linear
    module but the output head."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # bitsandbytes' 4- and 8-bit layers subclass torch.nn.Linear, so quantised models are covered
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head and ".layers." in f".{name}."}
    if not names:
        raise ModelError("found no linear layers inside a 'layers' block of this model; set lora_targets to its "
                         "module names, or leave lora_top_layers empty")
    return sorted(names)


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def attach_lora(
    model,
    settings: LoraSettings | None = None,
    *,
    adapter_name: str = "default",
    task_type: str = "CAUSAL_LM",
    modules_to_save: list[str] | None = None,
):
    """Wrap ``model`` in a PeftModel with a fresh trainable LoRA adapter; on an already wrapped model, add the
    adapter under ``adapter_name``. A 4-bit model is first prepared for k-bit training (norms in fp32, input
    gradients on), as QLoRA does; gradient checkpointing is :func:`enable_gradient_checkpointing`'s."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    settings = settings or LoraSettings()
    config = settings.peft_config(task_type, modules_to_save)
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, config)
        return model
    if is_quantized(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, config, adapter_name=adapter_name)


def enable_gradient_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them (``model``: the causal LM,
    under its adapters or not). Non-reentrant checkpointing: it recomputes with the same keyword arguments (the
    packed layouts' attention) and needs no gradient on a layer's input; the input-gradient hook is for models
    whose checkpointing does. The trainers switch it on here and nowhere else."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def load_adapter_weights(model, folder: str | os.PathLike[str], adapter_name: str = "default") -> None:
    """Put the weights of a saved adapter folder into the existing adapter ``adapter_name`` of a PeftModel, in
    place (an optimizer built on them keeps pointing at the right tensors)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(Path(folder) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"{folder}: the saved weights do not match the adapter {adapter_name!r} "
                         f"(unexpected {unexpected[:3]})")


def check_adapter_folder(path: str | os.PathLike[str]) -> Path:
    """A saved PEFT adapter folder with safetensors weights, or a ModelError saying what is wrong."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelError("no such adapter folder", ref=str(path))
    if not folder.is_dir() or not (folder / "adapter_config.json").is_file():
        raise ModelError("not a LoRA adapter folder (no adapter_config.json)", ref=str(path))
    if not (folder / "adapter_model.safetensors").is_file():
        if any(folder.glob("adapter_model*.bin")) or any(folder.glob("*.pt")):
            raise ModelError(
                "the adapter's weights are a pickle file (adapter_model.bin), which can run code when loaded; "
                "only safetensors adapters are loaded",
                ref=str(path),
            )
        raise ModelError("the adapter folder has no adapter_model.safetensors", ref=str(path))
    return folder


def adapter_base(path: str | os.PathLike[str]) -> str | None:
    """The base model an adapter folder says it was trained on (``base_model_name_or_path``), if recorded."""
    try:
        return json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        return None


def load_adapter(model, path: str | os.PathLike[str], *, adapter_name: str = "default", trainable: bool = False):
    """Put a saved adapter on ``model`` (a PeftModel gets it as another named adapter). Returns the PeftModel."""
    from peft import PeftModel

    folder = check_adapter_folder(path)
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(folder), adapter_name=adapter_name, is_trainable=trainable)
            return model
        return PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name, is_trainable=trainable)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"the adapter does not fit this base model ({e})", ref=str(path)) from e
