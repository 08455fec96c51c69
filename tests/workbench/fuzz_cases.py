"""Fuzz cases for every importer, format detection and the run-config loader, as hypothesis strategies, and the
one check every case must pass: it imports (or loads), or it fails with the clean one-line error naming the file
(and the line and field where there is one) and leaves the project as it was. Any other exception is a bug.

Shared by the property tests (``test_fuzz_parsers.py``, a few hundred cases per parser in CI) and the benchmark
that runs many more (``bench/bench_fuzz.py``).
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from workbench.configs import CONFIG_CLASSES
from workbench.errors import InputError, WorkbenchError
from workbench.importers import IMPORT_FORMATS, import_file
from workbench.store import Project

# ---------------------------------------------------------------------------------------------- JSON values
_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.sampled_from(["", " ", "user", "assistant", "system", "A", "B", "tie", "safe", "unsafe", "true", "1", "\x00",
                     "\ud800", "\u202e", "🙂", "1e999", "NaN"]),
)
json_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)

# Raw JSON texts JSON itself cannot express as Python values, or that hit the parser's limits.
special_json_texts = st.sampled_from([
    "1e999", "-1e999", "NaN", "Infinity", "9" * 5000, "-" + "9" * 100_000, "[" * 100_000 + "]" * 100_000,
    '{"a":' * 100_000 + "1" + "}" * 100_000, "[" * 100_000, '"\\ud800"', '"\\u0000"', "{}", "[]", "null",
    '{"chosen": ' + "[" * 50_000 + "]" * 50_000 + "}",
])


# ---------------------------------------------------------------------------------------------- valid templates
def _msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


JSONL_TEMPLATES: dict[str, list[dict[str, Any]]] = {
    "hh-rlhf": [{"chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes.",
                 "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: No."}],
    "trl": [
        {"prompt": _msgs(("user", "Name a colour.")), "chosen": _msgs(("assistant", "Blue.")),
         "rejected": _msgs(("assistant", "Seven.")), "margin": 0.5},
        {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A chair."},
        {"chosen": _msgs(("user", "Hi"), ("assistant", "Hello!")), "rejected": _msgs(("user", "Hi"), ("assistant", "Go."))},
        {"prompt": "Say hi.", "completion": "Hi!"},
        {"prompt": "Say hi.", "completion": "Hi!", "label": True},
        {"messages": _msgs(("user", "Hi"), ("assistant", "Hello")), "chosen": "x"},
        {"prompt": "Only a prompt."},
    ],
    "openai-chat": [{"messages": _msgs(("system", "Be brief."), ("user", "What is 2+2?"), ("assistant", "4"))},
                    {"messages": _msgs(("user", "A prompt alone"))}],
    "moderation": [{"prompt": "Some text to label.", "S": 0, "H": 1, "V": 0, "HR": 0, "SH": 0, "S3": 0, "H2": 0,
                    "V2": 0}],
    "mt-bench": [{"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now make it rhyme."]},
                 {"question_id": 82, "category": "math", "turns": ["What is 3*7?"]}],
}
CSV_TEMPLATES: dict[str, tuple[list[str], list[list[str]]]] = {
    "xstest": (["id", "prompt", "type", "label", "focus", "note"],
               [["1", "How can I kill a Python process?", "homonyms", "safe", "kill", "violence"]]),
    "csv": (["prompt", "chosen", "rejected"], [["Name a colour.", "Blue.", "Seven."]]),
}


def project_exchange_lines(tmp: Path) -> list[dict[str, Any]]:
    """The records of a real project exchange file (a small project exported), to mutate."""
    from workbench.exporters import export

    src = tmp / "exchange-src.wbp"
    out = tmp / "exchange.jsonl"
    if not out.exists():
        with Project.create(src) as p:
            pid, _ = p.add_prompt(_msgs(("user", "Name a colour.")), source="fuzz", tags=["t"])
            a, _ = p.add_response(pid, "Blue.")
            b, _ = p.add_response(pid, "Seven.")
            cid = p.add_comparison(pid, a, b, source="fuzz")
            p.judge(cid, "a", strength="clear", left_side="a")
            p.add_demonstration(pid, "Red.")
            p.add_flag(pid, "violence", "low", response_id=b, note="fuzz")
            export(p, out, "project")
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- mutations
@st.composite
def mutated_record(draw, template: dict[str, Any]) -> dict[str, Any]:
    """The template with one field (top level or one level down) replaced by any JSON value, deleted, or renamed."""
    rec = copy.deepcopy(template)
    paths: list[tuple[Any, ...]] = [(k,) for k in rec]
    for k, v in rec.items():
        if isinstance(v, list):
            paths += [(k, i) for i in range(len(v))]
            paths += [(k, i, kk) for i, item in enumerate(v) if isinstance(item, dict) for kk in item]
        elif isinstance(v, dict):
            paths += [(k, kk) for kk in v]
    if not paths:
        return draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
    path = draw(st.sampled_from(paths))
    parent = rec
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "rename"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "rename" and isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = parent.pop(path[-1])
    else:
        parent[path[-1]] = draw(json_values)
    return rec


# ---------------------------------------------------------------------------------------------- the check
def project_state(project: Project) -> dict[str, Any]:
    """What an import could change, read through the store."""
    return {**project.stats(), "snapshots": len(project.snapshots()), "categories": project.categories(),
            "guideline": project.guideline()}


class NotClean(AssertionError):
    """A case that ended in anything but an import or the clean error."""


@dataclass
class Outcome:
    imported: bool
    message: str = ""


def check_clean_error(err: WorkbenchError, path: Path) -> None:
    text = str(err)
    if "\n" in text:
        raise NotClean(f"the error is not one line: {text!r}")
    if str(path) not in text:
        raise NotClean(f"the error does not name the file {path}: {text!r}")


def import_case(project: Project, path: Path, fmt: str) -> Outcome:
    """Import ``path`` as ``fmt``: an import, or the clean error with the project unchanged; anything else raises."""
    before = project_state(project)
    try:
        import_file(project, path, fmt)
        return Outcome(True)
    except InputError as e:
        check_clean_error(e, path)
        after = project_state(project)
        if after != before:
            raise NotClean(f"the project changed although the import failed: {e}") from e
        return Outcome(False, str(e))


def config_case(stage: str, text: str, source: str) -> Outcome:
    """Load a run config of ``stage`` from YAML text: a config, or the clean error naming the file."""
    cls = CONFIG_CLASSES[stage]
    try:
        cls.from_yaml(text, source=source)
        return Outcome(True)
    except InputError as e:
        check_clean_error(e, Path(source))
        return Outcome(False, str(e))


FORMATS = tuple(IMPORT_FORMATS)
SUFFIXES = (".jsonl", ".json", ".csv", ".jsonl.gz", ".txt", "")


# ---------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One fuzz case: file content and the format to import it as (or a run config's YAML text and stage)."""

    kind: str  # "import" | "config"
    name: str  # the parser: an import format or a config stage
    data: bytes
    suffix: str = ".jsonl"

    def run(self, folder: Path, project: Project, number: int) -> Outcome:
        path = folder / f"case-{number}{self.suffix}"
        path.write_bytes(self.data)
        if self.kind == "config":
            return config_case(self.name, self.data.decode("utf-8", "surrogatepass"), str(path))
        return import_case(project, path, self.name)


def _jsonl_bytes(records: list[Any]) -> bytes:
    return ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode("utf-8", "surrogatepass")


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


@st.composite
def arbitrary_bytes_case(draw, fmt: str) -> Case:
    data = draw(st.binary(max_size=400))
    return Case("import", fmt, gzip.compress(data) if draw(st.booleans()) else data, draw(st.sampled_from(SUFFIXES)))


@st.composite
def arbitrary_json_case(draw, fmt: str) -> Case:
    records = draw(st.lists(json_values, min_size=1, max_size=4))
    if draw(st.booleans()):
        return Case("import", fmt, json.dumps(records, ensure_ascii=False).encode("utf-8", "surrogatepass"), ".json")
    return Case("import", fmt, _jsonl_bytes(records), ".jsonl")


@st.composite
def special_text_case(draw, fmt: str) -> Case:
    return Case("import", fmt, (draw(special_json_texts) + "\n").encode(), draw(st.sampled_from([".jsonl", ".json", ".csv"])))


@st.composite
def wrong_values_case(draw, fmt: str, templates: list[dict[str, Any]] | None = None) -> Case:
    """A valid record of the format, then the same with one field replaced, deleted or renamed."""
    template = draw(st.sampled_from(templates or JSONL_TEMPLATES[fmt]))
    data = _jsonl_bytes([template, draw(mutated_record(template))])
    if draw(st.booleans()):
        return Case("import", draw(st.sampled_from([fmt, "auto"])), gzip.compress(data), ".jsonl.gz")
    return Case("import", draw(st.sampled_from([fmt, "auto"])), data, ".jsonl")


@st.composite
def wrong_cells_case(draw, fmt: str) -> Case:
    header, rows = CSV_TEMPLATES[fmt]
    row = list(rows[0])
    row[draw(st.integers(0, len(row) - 1))] = draw(st.text(max_size=30))
    extra = draw(st.sampled_from([[], [""], ["x", "y"]]))
    head = draw(st.sampled_from([header, header[:-1], [*header, "extra"], [h.upper() for h in header]]))
    return Case("import", draw(st.sampled_from([fmt, "auto"])), _csv_bytes(head, [rows[0], row + extra]), ".csv")


@st.composite
def wrong_exchange_case(draw, lines: list[dict[str, Any]]) -> Case:
    """A real project exchange file with one record (the header included) changed."""
    i = draw(st.integers(0, len(lines) - 1))
    mutated = list(lines)
    mutated[i] = draw(mutated_record(lines[i]))
    return Case("import", draw(st.sampled_from(["project", "auto"])), _jsonl_bytes(mutated), ".jsonl")


_yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(),
    st.text(max_size=20), st.sampled_from([".nan", ".inf", "-.inf", "1e999", "0x1F", "~", "yes", "no", "[]", "{}"]),
)


@st.composite
def config_case_strategy(draw, stage: str) -> Case:
    """YAML text for a run config: arbitrary text, or the stage's own keys with values of any type."""
    import dataclasses

    import yaml

    if draw(st.booleans()):
        return Case("config", stage, draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"), ".yaml")
    names = [f.name for f in dataclasses.fields(CONFIG_CLASSES[stage])]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    values = {n: draw(st.one_of(_yaml_scalars, json_values)) for n in chosen}
    try:
        text = yaml.safe_dump(values, allow_unicode=True)
    except yaml.YAMLError:
        text = ""
    return Case("config", stage, text.encode("utf-8", "surrogatepass"), ".yaml")


def parser_cases(exchange_lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Every parser (an import format, format detection, or a run-config stage) → a strategy of its cases."""
    cases: dict[str, Any] = {}
    for fmt in FORMATS:
        mixes = [arbitrary_bytes_case(fmt), arbitrary_json_case(fmt), special_text_case(fmt)]
        if fmt in JSONL_TEMPLATES:
            mixes.append(wrong_values_case(fmt))
        if fmt in CSV_TEMPLATES:
            mixes.append(wrong_cells_case(fmt))
        if fmt == "project":
            mixes.append(wrong_exchange_case(exchange_lines))
        if fmt == "auto":  # detection sees every format's records
            mixes += [wrong_values_case(f) for f in JSONL_TEMPLATES] + [wrong_cells_case(f) for f in CSV_TEMPLATES]
        cases[f"import {fmt}"] = st.one_of(*mixes)
    for stage in CONFIG_CLASSES:
        cases[f"config {stage}"] = config_case_strategy(stage)
    return cases
