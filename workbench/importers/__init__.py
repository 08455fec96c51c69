"""Importing data files into a project: one module per format, plus file reading, detection and bulk writing.

:func:`import_file` reads and validates the whole file first (any structural error raises
:class:`~workbench.errors.InputError` naming the file, the line or row, and the field, before anything is
written), then writes everything in one transaction; valid but redundant records are skipped and counted by reason
in the returned :class:`~workbench.reports.ImportReport`.

Formats (each module's docstring says exactly what lands where):

- ``hh-rlhf`` (:mod:`.hh_rlhf`): chosen/rejected transcripts → comparisons judged for the chosen reply.
- ``trl`` (:mod:`.trl`): preference (with ``margin``, ``tie``, ``both_bad``), prompt/completion, messages, KTO
  prompt/completion/label, prompt-only.
- ``openai-chat`` (:mod:`.openai_chat`): demonstrations, or prompts when the last turn is not the assistant's.
- ``xstest`` (:mod:`.xstest`): the prompts CSV and the completions CSVs (human label kept on an ``over_refusal``
  flag row per response).
- ``moderation`` (:mod:`.moderation`): texts with per-category safety labels on the prompt.
- ``mt-bench`` (:mod:`.mt_bench`): MT-Bench / Vicuna-Bench questions and reference answers.
- ``csv`` (:mod:`.generic_csv`): prompt,chosen,rejected / prompt,completion / prompt.
- ``project``: the lossless exchange, read by :func:`workbench.exchange.import_project`.
- ``auto`` (:mod:`.detect`): from the container and the first records' keys or the CSV header.

Containers (:mod:`.reading`): ``.jsonl``, ``.json`` (an array of objects), ``.csv``, each optionally gzipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..messages import DEFAULT_MAX_MESSAGE_CHARS
from ..reports import ImportReport
from ..store import Project

IMPORT_FORMATS = ("auto", "hh-rlhf", "trl", "openai-chat", "xstest", "moderation", "mt-bench", "csv", "project")

__all__ = ["IMPORT_FORMATS", "import_file"]


def _parsers() -> dict[str, Callable]:
    from . import generic_csv, hh_rlhf, moderation, mt_bench, openai_chat, trl, xstest

    return {
        "hh-rlhf": lambda f, ctx: hh_rlhf.parse(f.records, ctx),
        "trl": lambda f, ctx: trl.parse(f.records, ctx),
        "openai-chat": lambda f, ctx: openai_chat.parse(f.records, ctx),
        "xstest": lambda f, ctx: xstest.parse(f.records, ctx, f.header),
        "moderation": lambda f, ctx: moderation.parse(f.records, ctx),
        "mt-bench": lambda f, ctx: mt_bench.parse(f.records, ctx),
        "csv": generic_csv.parse,
    }


def _default_source(fmt: str, path: Path) -> str:
    from .common import derived_source
    from .mt_bench import bench_name

    fixed = {"xstest": "xstest", "moderation": "openai-moderation", "mt-bench": bench_name(path)}
    return fixed.get(fmt) or derived_source(fmt, path)


def _import_project(project: Project, path: Path, max_chars: int) -> ImportReport:
    try:
        from ..exchange import import_project
    except ModuleNotFoundError as e:
        if e.name != "workbench.exchange":
            raise
        raise InputError("reading the project exchange format is not available in this build", str(path)) from e
    return import_project(project, path, max_chars=max_chars)


def import_file(
    project: Project,
    path: str | Path,
    fmt: str = "auto",
    *,
    max_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    source: str | None = None,
) -> ImportReport:
    """Import one file into ``project`` in one transaction (all or nothing); see the module docstring."""
    from .common import Context
    from .detect import detect, is_project_header
    from .reading import first_json_object, load, read_bytes
    from .staging import Staging, write_staged

    p = Path(path)
    if fmt not in IMPORT_FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(IMPORT_FORMATS)}", str(p))
    if not isinstance(max_chars, int) or max_chars <= 0:
        raise InputError(f"the size cap must be a positive number of characters, not {max_chars!r}", str(p))
    if fmt in ("auto", "project"):
        if not p.exists() or p.is_dir():
            read_bytes(p)  # raises the right InputError
        if fmt == "project" or is_project_header(first_json_object(p)):
            return _import_project(project, p, max_chars)
    loaded = load(p, max_chars=max_chars)
    if fmt == "auto":
        fmt = detect(loaded)
        if fmt == "project":
            return _import_project(project, p, max_chars)
    report = ImportReport(str(p), fmt, records=len(loaded.records))
    staging = Staging(report)
    ctx = Context(
        p, source if source else _default_source(fmt, p), max_chars, staging, report,
        explicit_source=bool(source), container=loaded.container,
    )
    _parsers()[fmt](loaded, ctx)
    # Everything is validated and staged: now write it as one transaction.
    with project.transaction():
        write_staged(project, staging)
    return report
