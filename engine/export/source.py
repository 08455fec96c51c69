"""What is being exported: the adapter folder, the base it is merged into, what kind of model it makes, and the run
it came from (for the model card).

The base is the export's ``base_model`` when given, else the run's own reference from the adapter folder's
``config.yaml`` (``bundled:…``, a hub id, a folder), else the one peft recorded in ``adapter_config.json``. A base
that cannot be found is refused with a message saying how to give it. An adapter with a ``head.safetensors``
beside it is a reward model (one output) or a safety classifier (one output per category); any other is a causal
LM adapter (SFT, DPO, PPO).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.model_export import locate_run, pickled_files

from ..jobs import JobError
from ..lora import adapter_base, check_adapter_folder
from ..model_errors import ModelError
from ..models import check_model_folder, resolve_model_path
from ..reward_model import read_head_meta

CAUSAL_LM, REWARD_MODEL, SAFETY_CLASSIFIER = "causal-lm", "reward-model", "safety-classifier"


@dataclass
class ExportSource:
    adapter: Path
    base_ref: str
    base_path: Path
    kind: str
    head: dict[str, Any] = field(default_factory=dict)
    run_config: dict[str, Any] = field(default_factory=dict)
    project_run: tuple[Path, int] | None = None
    stage: str | None = None
    readme: str = ""

    @property
    def labels(self) -> list[str]:
        return list(self.head.get("labels") or [])


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _stage_from_card(readme: str) -> str | None:
    """The training stage a run's model card names in its tags (``tags: [lora, sft, rlhf-workbench]``)."""
    match = re.search(r"^tags:\s*\[lora,\s*([\w-]+)", readme, re.MULTILINE)
    return match.group(1) if match else None


def inspect_source(adapter: str, base_model: str = "", *, trust_remote_code: bool = False) -> ExportSource:
    """The export's source, or a JobError saying what is missing."""
    folder = Path(adapter).expanduser().resolve()
    try:
        check_adapter_folder(folder)
    except ModelError as e:
        raise JobError(str(e)) from e
    pickles = pickled_files(folder)
    if pickles:
        raise JobError(f"{folder}: holds pickled files ({', '.join(p.name for p in pickles[:3])}), which can run code "
                       "when loaded; only safetensors are loaded")
    run_config = _read_yaml(folder / "config.yaml")
    base_ref = base_model or str(run_config.get("base_model") or "") or adapter_base(folder) or ""
    if not base_ref:
        raise JobError(f"{folder}: the adapter does not record its base model; give it with --base")
    try:
        base_path = resolve_model_path(base_ref)
        check_model_folder(base_path, base_ref, trust_remote_code=trust_remote_code)
    except ModelError as e:
        raise JobError(f"the base model of the adapter {folder} cannot be used: {e}; give the base with --base "
                       "(a folder, a .gguf file, a hub id in the local cache or bundled:NAME)") from e
    head = read_head_meta(folder)
    if head:
        kind = SAFETY_CLASSIFIER if head.get("kind") == "safety" or int(head.get("out_features", 1)) > 1 else REWARD_MODEL
    else:
        kind = CAUSAL_LM
    try:
        readme = (folder / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        readme = ""
    return ExportSource(adapter=folder, base_ref=base_ref, base_path=base_path, kind=kind, head=head,
                        run_config=run_config, project_run=locate_run(folder), stage=_stage_from_card(readme),
                        readme=readme)


def base_dtype(source: ExportSource) -> str:
    """The precision the base model is stored in (its config.json), float32 when it does not say."""
    try:
        config = json.loads((source.base_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    value = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return value if value in ("float32", "bfloat16", "float16") else "float32"
