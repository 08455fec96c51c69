"""Which chat template a model is used with: its own, or the one a run config names.

Order of precedence, for the tokenizer of a run's base model:

1. the run config's ``chat_template``: a named template shipped in ``resources/chat_templates/`` (``chatml``,
   ``llama3``, ``gemma``) or the path of a Jinja file;
2. the template recorded with the run's ``adapter_from`` adapter (``chat_template.jinja``, which every trainer saves
   with its tokenizer), so a DPO or PPO run continuing an SFT adapter keeps the template that adapter learned;
3. the model's own template.

A tokenizer left with no template at all is refused with a message naming the setting and the named choices.

The worker opens :func:`run_chat_template` around each job, and :func:`engine.models.load_tokenizer` asks
:func:`apply_chat_template_choice` for every tokenizer it loads: the run's choice applies to the run's base model
only (a reward model on another base keeps its own), so every stage, generation and evaluation renders
conversations the same way without each trainer passing the choice along. A trainer's
``tokenizer.save_pretrained`` then writes the template used into the adapter folder (``chat_template.jinja``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.paths import chat_templates_dir, named_chat_templates

from .model_errors import ModelError

TEMPLATE_FILE = "chat_template.jinja"
_PROBE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"},
          {"role": "user", "content": "V"}]


@dataclass(frozen=True)
class ChatTemplate:
    """A template's Jinja text and where it came from (for logs and model cards)."""

    text: str
    source: str


def how_to_give_one() -> str:
    return (f"name one with the run setting chat_template: a template shipped with the app "
            f"({', '.join(named_chat_templates())}) or the path of a Jinja file (on the command line: "
            "--chat-template chatml)")


def load_template(spec: str) -> ChatTemplate:
    """A named template or a Jinja file, checked by rendering a short conversation; a ModelError names the problem."""
    name = spec.strip()
    if name in named_chat_templates():
        path, source = chat_templates_dir() / f"{name}.jinja", f"the named template {name}"
    else:
        path, source = Path(name).expanduser(), f"the file {name}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"chat_template {spec!r}: not a named template ({', '.join(named_chat_templates())}) nor a "
                         f"readable Jinja file ({e})") from e
    check_template(text, f"chat_template {spec!r}")
    return ChatTemplate(text=text, source=source)


def check_template(text: str, where: str) -> None:
    """Refuse a template that is not valid Jinja or fails on a plain system/user/assistant conversation."""
    import jinja2

    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        render_jinja_template([_PROBE], chat_template=text, add_generation_prompt=True, bos_token="", eos_token="")
    except jinja2.TemplateSyntaxError as e:
        raise ModelError(f"{where}: line {e.lineno}: not valid Jinja ({e.message})") from e
    except Exception as e:  # noqa: BLE001 - a template may raise anything (raise_exception, type errors)
        raise ModelError(f"{where}: fails on a system, user, assistant, user conversation ({e})") from e


def recorded_template(adapter_dir: str | Path | None) -> ChatTemplate | None:
    """The template an adapter folder was trained with (saved with its tokenizer), if it records one."""
    if not adapter_dir:
        return None
    path = Path(adapter_dir).expanduser() / TEMPLATE_FILE
    try:
        return ChatTemplate(text=path.read_text(encoding="utf-8"), source=f"the adapter {adapter_dir}")
    except (OSError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------------- the run's choice
@dataclass(frozen=True)
class _RunChoice:
    base_model: str
    template: ChatTemplate


_run_choice: _RunChoice | None = None


@contextmanager
def run_chat_template(config: Any) -> Iterator[ChatTemplate | None]:
    """For the duration of a job: the template ``config`` chooses for its base model (None: the model's own)."""
    spec = getattr(config, "chat_template", None)
    template = load_template(spec) if spec else recorded_template(getattr(config, "adapter_from", None))
    with template_for_model(str(getattr(config, "base_model", "") or ""), template):
        yield template


@contextmanager
def template_for_model(base_model: str, template: ChatTemplate | None) -> Iterator[None]:
    """While open, tokenizers of ``base_model`` get ``template`` (nothing changes when either is empty)."""
    global _run_choice
    previous = _run_choice
    _run_choice = _RunChoice(base_model, template) if template is not None and base_model else None
    try:
        yield
    finally:
        _run_choice = previous


def _same_model(ref: str, folder: Path | None, base: str) -> bool:
    if ref == base:
        return True
    try:
        base_path = Path(base).expanduser().resolve()
        return base_path.exists() and base_path in {Path(ref).expanduser().resolve(), *([folder.resolve()] if folder else [])}
    except OSError:
        return False


def apply_chat_template_choice(tokenizer: Any, ref: str, folder: Path | None = None) -> Any:
    """Give ``tokenizer`` (of model ``ref``, loaded from ``folder``) the running job's template when it is the job's
    base model; refuse a tokenizer that ends up with no template."""
    choice = _run_choice
    if choice is not None and _same_model(ref, folder, choice.base_model):
        tokenizer.chat_template = choice.template.text
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"has no chat template, so conversations cannot be written for it; {how_to_give_one()}",
                         ref=ref)
    return tokenizer
