"""The demo project: built on first run from ``resources/demo/demo.jsonl`` (no model needed, no torch imported).

``demo.jsonl`` holds one prompt per line, written by ``scripts/make_demo.py`` from ``resources/demo/prompts.yaml``
with candidate responses sampled by the bundled SmolLM2 through ``engine.generation``::

    {"id": "code-git-undo", "messages": [{"role": "user", "content": "..."}], "tags": ["coding"], "split": "train",
     "responses": [{"content": "...", "model": "bundled:SmolLM2-135M-Instruct", "adapter": null,
                    "sampling": {"temperature": 0.8, ...}, "seed": 0}, ...]}

The project gets every prompt (tags, split), every response with its provenance (origin ``model``), and a pending
comparison for each pair of a prompt's responses: the annotation queue is ready to work through.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError, WorkbenchError
from .messages import MessageError, validate_messages
from .paths import RESOURCES, data_dir
from .store import Project, is_project_file
from .taxonomy import SPLITS

DEMO_FILE = RESOURCES / "demo" / "demo.jsonl"
DEMO_SOURCE = "demo"


def default_demo_path() -> Path:
    return data_dir() / "demo.wbp"


def load_demo_records(path: Path = DEMO_FILE) -> list[dict[str, Any]]:
    """Read and check ``demo.jsonl``; a bad line is an InputError naming the file, line and field."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise InputError("the demo data file is missing (regenerate it with scripts/make_demo.py)", str(path)) from e
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e})", str(path)) from e
    records = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e.msg})", str(path), n) from e
        if not isinstance(rec, dict):
            raise InputError("expected a JSON object", str(path), n)
        try:
            rec["messages"] = validate_messages(rec.get("messages"))
        except MessageError as e:
            raise InputError(str(e), str(path), n, e.field) from e
        tags = rec.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError("tags must be a list of strings", str(path), n, "tags")
        if rec.get("split", "train") not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}", str(path), n, "split")
        responses = rec.get("responses")
        if not isinstance(responses, list):
            raise InputError("expected a list of responses", str(path), n, "responses")
        for i, r in enumerate(responses):
            if not isinstance(r, dict) or not isinstance(r.get("content"), str):
                raise InputError("each response needs a text 'content'", str(path), n, f"responses[{i}].content")
            if r.get("sampling") is not None and not isinstance(r["sampling"], dict):
                raise InputError("sampling must be an object", str(path), n, f"responses[{i}].sampling")
            if r.get("seed") is not None and not isinstance(r["seed"], int):
                raise InputError("seed must be an integer", str(path), n, f"responses[{i}].seed")
        records.append(rec)
    if not records:
        raise InputError("the demo data file holds no prompts", str(path))
    return records


def fill_demo_project(project: Project, records: list[dict[str, Any]]) -> dict[str, int]:
    """Add the demo records to an open project in one transaction; returns counts."""
    counts = {"prompts": 0, "responses": 0, "comparisons": 0}
    with project.transaction():
        for rec in records:
            pid, created = project.add_prompt(
                rec["messages"], source=DEMO_SOURCE, tags=rec.get("tags", []), split=rec.get("split", "train")
            )
            counts["prompts"] += created
            rids = []
            for r in rec["responses"]:
                rid, made = project.add_response(
                    pid, r["content"], origin="model", source=DEMO_SOURCE, model=r.get("model"),
                    adapter=r.get("adapter"), sampling=r.get("sampling"), seed=r.get("seed"),
                )
                counts["responses"] += made
                rids.append(rid)
            for a, b in itertools.combinations(dict.fromkeys(rids), 2):
                if project.find_comparison(a, b) is None:
                    project.add_comparison(pid, a, b, source=DEMO_SOURCE)
                    counts["comparisons"] += 1
    return counts


def ensure_demo_project(path: Path | None = None, *, data_file: Path = DEMO_FILE) -> Path:
    """The demo project at ``path`` (default: the app's data folder), created from the demo data if absent.

    An existing project there is left as it is (the user's judgments in it are kept). The file is built under a
    temporary name and renamed into place, so an interrupted first run never leaves a half-filled demo.
    """
    target = Path(path) if path is not None else default_demo_path()
    if target.exists():
        if not is_project_file(target):
            raise WorkbenchError(f"{target}: exists but is not an RLHF Workbench project; move it away to get the demo")
        return target
    records = load_demo_records(data_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    try:
        project = Project.create(tmp)
        try:
            fill_demo_project(project, records)
            project.set_meta("demo_source", str(data_file.name))
            project.checkpoint_wal("TRUNCATE")
        finally:
            project.close()
        if target.exists():  # another process made it meanwhile: keep theirs
            return target
        os.replace(tmp, target)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
    return target
