"""XSTest (Röttger et al.): the prompts CSV and the model-completions CSVs.

- ``xstest_prompts.csv`` (``id,prompt,type,label,focus,note``): each prompt tagged ``xstest``, its label
  (``safe`` / ``unsafe``) and ``xstest:type=<type>``; all land in the train split (the tags are enough to
  select them, and the expert may hold any of them out).
- ``xstest_v2_completions_<model>.csv`` (``id,type,prompt,completion,annotation_1,annotation_2,agreement,
  final_label``): the completion becomes an imported response to the prompt (``model`` = the name in the file
  name, ``source`` = ``xstest:<model>``); the prompt is tagged as above, its safety read from ``type`` (types
  starting with ``contrast_`` are unsafe).

Where the human label is kept: every completion gets exactly one ``over_refusal`` safety-flag row on its response.
A refusal (``2_full_refusal``: severity medium, ``3_partial_refusal``: low) of a *safe* prompt is present; every
other completion gets a present = 0 row (checked: not an over-refusal). The row's note always reads
``xstest final_label=<label>; annotators=<a1>,<a2>; agreement=<TRUE|FALSE>``, so the adjudicated human label of
every response can be read back with :func:`final_labels`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..store import Project
from .common import Context, user
from .reading import Record

PROMPT_COLUMNS = ("id", "prompt", "type", "label", "focus", "note")
COMPLETION_COLUMNS = ("id", "type", "prompt", "completion", "annotation_1", "annotation_2", "agreement", "final_label")
LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")
REFUSAL_SEVERITY = {"2_full_refusal": "medium", "3_partial_refusal": "low"}
NOTE_PREFIX = "xstest final_label="
SKIP_EMPTY = "empty completion"


def kind_of(header: Iterable[str]) -> str | None:
    cols = set(header)
    if {"prompt", "completion", "final_label", "type"} <= cols:
        return "completions"
    if {"prompt", "type", "label"} <= cols and "completion" not in cols:
        return "prompts"
    return None


def _tags(prompt_type: str, safety: str) -> list[str]:
    return ["xstest", safety, f"xstest:type={prompt_type}"]


def _model_name(ctx: Context) -> str:
    m = re.search(r"completions_(.+?)(?:\.csv)?(?:\.gz)?$", ctx.path.name, re.IGNORECASE)
    return m.group(1) if m else ctx.path.name.split(".")[0]


def parse(records: list[Record], ctx: Context, header: list[str] | None) -> None:
    kind = kind_of(header or records[0].data)
    if kind is None:
        found = ", ".join(header or sorted(records[0].data)) or "none"
        ctx.error(
            f"not an XSTest file: expected the columns {','.join(PROMPT_COLUMNS)} or {','.join(COMPLETION_COLUMNS)};"
            f" found {found}", 1 if header else records[0],
        )
    if kind == "prompts":
        _prompts(records, ctx)
    else:
        _completions(records, ctx)


def _prompts(records: list[Record], ctx: Context) -> None:
    for rec in records:
        text = ctx.text(rec, "prompt", allow_empty=False)
        prompt_type = ctx.text(rec, "type", allow_empty=False).strip()
        label = ctx.text(rec, "label").strip().lower()
        if label not in ("safe", "unsafe"):
            ctx.error(f"expected safe or unsafe, got {rec.data['label']!r}", rec, "label")
        ctx.staging.prompt(user(text), source=ctx.source, tags=_tags(prompt_type, label), standalone=True)


def _completions(records: list[Record], ctx: Context) -> None:
    model = _model_name(ctx)
    response_source = ctx.source if ctx.explicit_source else f"{ctx.source}:{model}"
    st = ctx.staging
    for rec in records:
        text = ctx.text(rec, "prompt", allow_empty=False)
        prompt_type = ctx.text(rec, "type", allow_empty=False).strip()
        completion = ctx.text(rec, "completion")
        final = ctx.text(rec, "final_label").strip()
        if final not in LABELS:
            ctx.error(f"expected one of {', '.join(LABELS)}, got {final!r}", rec, "final_label")
        notes = [f"{NOTE_PREFIX}{final}"]
        a1, a2 = (str(rec.data.get(k, "")).strip() for k in ("annotation_1", "annotation_2"))
        if a1 or a2:
            notes.append(f"annotators={a1},{a2}")
        if str(rec.data.get("agreement", "")).strip():
            notes.append(f"agreement={rec.data['agreement'].strip()}")
        safety = "unsafe" if prompt_type.startswith("contrast_") else "safe"
        p = st.prompt(user(text), source=ctx.source, tags=_tags(prompt_type, safety))
        if not completion.strip():
            ctx.report.skip(SKIP_EMPTY)
            continue
        r = st.response(p, completion, source=response_source, model=model)
        over_refusal = safety == "safe" and final in REFUSAL_SEVERITY
        st.flag(
            p, "over_refusal", response=r, present=over_refusal,
            severity=REFUSAL_SEVERITY[final] if over_refusal else None,
            note="; ".join(notes), source=response_source,
        )


def final_labels(project: Project, source: str | None = None) -> dict[int, str]:
    """Response id → XSTest human ``final_label`` for every imported XSTest completion (optionally one source,
    e.g. ``xstest:gpt4``): the reading side of where this importer keeps the label."""
    notes = project.flag_notes("over_refusal", NOTE_PREFIX, source=source)
    return {rid: note[len(NOTE_PREFIX):].split(";", 1)[0].strip() for rid, note in notes.items()}
