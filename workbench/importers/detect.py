"""``--format auto``: which importer a file needs, from its container, CSV header or first records' keys."""

from __future__ import annotations

from .. import importers
from ..errors import InputError
from . import hh_rlhf, moderation, mt_bench, trl, xstest
from .reading import LoadedFile

PROJECT_HEADER_FORMAT = "rlhf-workbench-project"
_SAMPLE = 50  # records looked at: some formats leave keys out of single records (moderation labels)


def is_project_header(first: dict | None) -> bool:
    return bool(first) and first.get("format") == PROJECT_HEADER_FORMAT  # type: ignore[union-attr]


def detect(loaded: LoadedFile) -> str:
    if loaded.container == "csv":
        header = loaded.header or []
        return "xstest" if xstest.kind_of(header) else "csv"
    first = loaded.records[0].data
    keys: set[str] = set()
    for rec in loaded.records[:_SAMPLE]:
        keys.update(rec.data)
    if is_project_header(first):
        return "project"
    if mt_bench.kind_of(first):
        return "mt-bench"
    if moderation.looks_like(keys):
        return "moderation"
    if {"chosen", "rejected"} <= keys and "prompt" not in keys and hh_rlhf.looks_like_transcript(first.get("chosen")):
        return "hh-rlhf"
    if "messages" in keys and not keys & {"chosen", "rejected", "completion"}:
        return "openai-chat"
    if trl.kind_of(first):
        return "trl"
    raise InputError(
        f"cannot tell the format from the keys {', '.join(sorted(first)) or '(none)'}; pass --format "
        f"(one of {', '.join(importers.IMPORT_FORMATS)})",
        str(loaded.path), loaded.records[0].line,
    )
