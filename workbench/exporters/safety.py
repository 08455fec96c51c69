"""The safety data set: one row per flagged text, for training or checking a safety classifier.

Columns: ``text`` (the response, or the prompt itself for prompt-level flags), ``target`` (``response`` or
``prompt``), ``categories`` (present), ``absent`` (checked and known absent: negative labels), ``severity`` (the
highest among the present flags, null when none is present), and ``prompt`` (the conversation, for context). A
category in neither list is unknown for that text, not absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import training_data as td
from ..store import Project


def safety_rows(project: Project, snapshot_id: int) -> Iterator[dict[str, Any]]:
    for ex in td.safety_examples(project, snapshot_id):
        yield {
            "text": ex.text,
            "target": "response" if ex.response_id is not None else "prompt",
            "categories": ex.categories,
            "absent": ex.absent,
            "severity": ex.severity,
            "prompt": ex.prompt,
        }


def safety_features() -> Any:
    import datasets

    strings = datasets.List(datasets.Value("string"))
    return datasets.Features({
        "text": datasets.Value("string"),
        "target": datasets.Value("string"),
        "categories": strings,
        "absent": strings,
        "severity": datasets.Value("string"),
        "prompt": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
    })
