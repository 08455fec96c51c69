"""The lossless project exchange: a whole project's annotation work as JSON Lines, and reading it back into another
project (merging, de-duplicating). This is how an expert labelling offline hands a researcher their work.

File layout. Line 1 is a header ``{"format": "rlhf-workbench-project", "version": 1, "counts": {...}, ...}``; every
other line is one record with a ``type``: ``guideline``, ``category``, ``prompt``, ``response``, ``comparison``,
``ranking``, ``demonstration`` or ``flag``, written in that order, each table in id order. Records never carry
row ids: they refer to each other by content, so a file reads into any project.

- a prompt is its ``hash`` (the project's content hash of its messages); a response is its prompt's hash plus its
  own ``hash`` (responses are unique per prompt by content);
- comparisons, rankings and flags have no content identity (the same pair may be judged twice), so each carries a
  ``key``: a hash of what it is about (prompt, responses, category) and its ``created_at``, plus its rank among
  rows sharing all of those. Retest links (``retest_of``) are keys;
- guideline versions are numbered within the file; on import each maps to the target's version with the same text
  (or a new version appended after the target's own, which makes the last imported one current).

What is written: every field of prompts (messages, source, split, tags, created_at), responses (content and full
provenance), comparisons (shown side, verdict, strength, criteria, note, time spent, guideline version, kind,
retest link, retraction, timestamps), rankings with entries, demonstrations (with the response they were edited
from), flag categories (custom ones included), safety labels (present or known absent, severity, note), and the
guideline versions. Not written: snapshots, runs, metrics and checkpoints — training history that refers to
folders on the machine that made it.

Import merges: a prompt or response already in the project is reused (tags are unioned; the project's source is
kept; a prompt held out on either side ends up held out, so nothing the source kept out of training enters it here);
a row whose key is already there is skipped, except that a pending comparison there takes the imported judgment;
and a judged comparison, ranking or flag equal to one the project already had before the
import (same pair, verdict, strength and source; same entries; same label) is skipped as a duplicate, as is a new
pending item for a pair already queued or judged. Every skip is counted with its reason. The whole file goes in one
transaction: any bad record aborts it with the file, line and field named, leaving the project unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import InputError
from .exporters.output import write_lines
from .messages import (
    DEFAULT_MAX_MESSAGE_CHARS,
    MessageError,
    canonical_json,
    check_size,
    content_hash,
    last_user_text,
    prompt_hash,
    response_hash,
    validate_messages,
)
from .reports import ExportReport, ImportReport
from .schema import SCHEMA_VERSION
from .store import Project, now_iso
from .taxonomy import CRITERIA, CRITERION_VERDICTS, ORIGINS, SEVERITIES, SPLITS, STRENGTHS, VERDICTS

FORMAT = "rlhf-workbench-project"
VERSION = 1
RECORD_TYPES = ("guideline", "category", "prompt", "response", "comparison", "ranking", "demonstration", "flag")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _key(kind: str, *parts: Any) -> str:
    """A row's identity in the exchange (128 bits of SHA-256 over what it is about and when it was made)."""
    return content_hash([kind, *parts])[:32]


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


# ---------------------------------------------------------------------------------------------- export
def export_project(project: Project, out_path: str | os.PathLike[str]) -> ExportReport:
    """Write every annotation row of ``project`` to ``out_path`` (JSON Lines, ``.gz`` compressed if so named) and
    record a ``project`` snapshot whose content hash is the hash of the records written."""
    out = Path(out_path)
    report = ExportReport(out=str(out), format="project")
    digest = hashlib.sha256()
    with project.read_transaction():  # every table seen at the same instant
        counts = project.exchange_counts()
        header = {
            "format": FORMAT, "version": VERSION, "schema_version": SCHEMA_VERSION, "app": "rlhf-workbench",
            "exported_at": now_iso(), "project_created_at": project.meta("created_at"), "counts": counts,
        }

        def lines() -> Iterator[str]:
            yield _dumps(header)
            for record in _records(project):
                line = _dumps(record)
                digest.update(line.encode("utf-8"))
                digest.update(b"\n")
                yield line

        report.rows = write_lines(out, lines()) - 1
    try:
        # Recorded without snapshot items on purpose: item rows would put every judgment "in a snapshot", and the
        # store would then turn each later undo into a retraction. The hash pins exactly what was handed over.
        report.snapshot_id = project.record_snapshot(
            "project", digest.hexdigest(), counts, options={"out": str(out)}, note="project export"
        )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return report


def _retest_keys(project: Project, table: str) -> dict[int, str]:
    """Keys of the rows that retests point at (few), computed with the same rank rule as the main pass."""
    return {row[0]: _key(table, *row[1:]) for row in project.retest_targets(table)}


def _records(project: Project) -> Iterator[dict[str, Any]]:
    rows = project.exchange_rows
    for version, text, created_at in rows("guideline"):
        yield {"type": "guideline", "version": version, "text": text, "created_at": created_at}
    for key, label, description, builtin in rows("category"):
        yield {"type": "category", "key": key, "label": label, "description": description, "builtin": bool(builtin)}
    for h, messages, source, split, created_at, tags in rows("prompt"):
        yield {"type": "prompt", "hash": h, "messages": json.loads(messages), "source": source, "split": split,
               "tags": json.loads(tags), "created_at": created_at}
    for ph, h, content, origin, source, model, adapter, sampling, seed, created_at in rows("response"):
        yield {"type": "response", "prompt": ph, "hash": h, "content": content, "origin": origin, "source": source,
               "model": model, "adapter": adapter, "sampling": _json_or_none(sampling), "seed": seed,
               "created_at": created_at}

    retests = _retest_keys(project, "comparison")
    for (cid, ph, ah, bh, left_side, verdict, strength, criteria, note, spent, gv, judged_at, source, kind,
         retest_of, retracted_at, created_at, occ) in rows("comparison"):
        yield {"type": "comparison", "key": _key("comparison", ph, ah, bh, created_at, occ), "prompt": ph, "a": ah,
               "b": bh, "left_side": left_side, "verdict": verdict, "strength": strength,
               "criteria": _json_or_none(criteria), "note": note, "time_spent_ms": spent, "guideline_version": gv,
               "judged_at": judged_at, "source": source, "kind": kind,
               "retest_of": retests.get(retest_of) if retest_of is not None else None,
               "retracted_at": retracted_at, "created_at": created_at}

    retests = _retest_keys(project, "ranking")
    for (ph, note, spent, gv, source, retest_of, judged_at, retracted_at, created_at, occ, entries) in rows("ranking"):
        yield {"type": "ranking", "key": _key("ranking", ph, created_at, occ), "prompt": ph,
               "entries": json.loads(entries), "note": note, "time_spent_ms": spent, "guideline_version": gv,
               "source": source, "retest_of": retests.get(retest_of) if retest_of is not None else None,
               "judged_at": judged_at, "retracted_at": retracted_at, "created_at": created_at}

    for ph, rh, eh, eph, note, spent, gv, source, retracted_at, created_at in rows("demonstration"):
        # edited_from is a response of the same prompt (just its hash) or, unusually, of another ([prompt, hash])
        edited = None if eh is None else (eh if eph == ph else [eph, eh])
        yield {"type": "demonstration", "prompt": ph, "response": rh, "edited_from": edited, "note": note,
               "time_spent_ms": spent, "guideline_version": gv, "source": source, "retracted_at": retracted_at,
               "created_at": created_at}

    for (ph, rh, category, present, severity, note, source, gv, retracted_at, created_at, occ) in rows("flag"):
        yield {"type": "flag", "key": _key("flag", ph, rh, category, created_at, occ), "prompt": ph, "response": rh,
               "category": category, "present": bool(present), "severity": severity, "note": note, "source": source,
               "guideline_version": gv, "retracted_at": retracted_at, "created_at": created_at}


# ---------------------------------------------------------------------------------------------- reading
def read_header(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The header of a project exchange file, or None when the file is not one (a cheap peek for ``--format auto``)."""
    try:
        for _n, line in _lines(Path(path)):
            value = json.loads(line)
            return value if isinstance(value, dict) and value.get("format") == FORMAT else None
    except (InputError, ValueError, RecursionError):
        return None
    return None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers, streamed (the file may be larger than memory); gzip recognised by its
    magic bytes. Raises InputError for a missing file, bad gzip or non-UTF-8 bytes."""
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a folder, not a project exchange file", str(path))
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    number = 0
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as raw:
            for number, data in enumerate(raw, 1):
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(
                        f"not UTF-8 text: byte 0x{data[e.start]:02x} at column {e.start + 1} cannot be decoded",
                        str(path), number,
                    ) from None
                if number == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                if line.strip():
                    yield number, line
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"not a readable gzip file ({e})", str(path), number or None) from None


# ---------------------------------------------------------------------------------------------- import
def import_project(
    project: Project, path: str | os.PathLike[str], *, max_chars: int = DEFAULT_MAX_MESSAGE_CHARS
) -> ImportReport:
    """Read a project exchange file into ``project`` (merging; see the module docstring), in one transaction."""
    p = Path(path)
    report = ImportReport(path=str(p), format="project")
    lines = _lines(p)
    first = next(lines, None)
    if first is None:
        raise InputError("the file is empty (no header line)", str(p))
    header = _parse(first[1], p, first[0])
    if header.get("format") != FORMAT:
        raise InputError(f"not a project exchange file: the first line's \"format\" must be {FORMAT!r}", str(p), first[0], "format")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError("the header's version must be a positive integer", str(p), first[0], "version")
    if version > VERSION:
        raise InputError(
            f"written by a newer RLHF Workbench (exchange version {version}; this app reads up to {VERSION})",
            str(p), first[0], "version",
        )
    with project.transaction():
        imp = _Importer(project, p, report, max_chars)
        last = first[0]
        for number, line in lines:
            last = number
            imp.record(number, _parse(line, p, number))
        imp.finish(header.get("counts"), last)
    return report


def _parse(line: str, path: Path, number: int) -> dict[str, Any]:
    from .importers.reading import parse_json

    value = parse_json(line, path, number)
    if not isinstance(value, dict):
        raise InputError(f"expected a JSON object, got {type(value).__name__}", str(path), number)
    return value


_MISSING = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _Importer:
    """State of one import: content references resolved to this project's ids, and the counts for the report."""

    def __init__(self, project: Project, path: Path, report: ImportReport, max_chars: int):
        self.project = project
        self.path = str(path)
        self.report = report
        self.max_chars = max_chars
        self.line = 0
        self.seen: Counter[str] = Counter()
        self.prompts: dict[str, int] = {}
        self.responses: dict[tuple[str, str], int] = {}
        self.guidelines: dict[int, int] = {}
        self.keys: dict[str, dict[str, int]] = {"comparison": {}, "ranking": {}, "flag": {}}
        self.retest_links: list[tuple[str, int, str, int]] = []
        # Rows the project had before this import: only these count as duplicates of a new row's content.
        self.before = project.max_row_ids()

    # ------------------------------------------------------------------ field checks
    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(message, self.path, self.line, field)

    def get(self, rec: dict[str, Any], field: str, kinds: tuple[type, ...], *, required: bool = True, nullable: bool = False) -> Any:
        value = rec.get(field, _MISSING)
        if value is _MISSING:
            if required:
                raise self.error("required field is missing", field)
            return None
        if value is None:
            if nullable:
                return None
            raise self.error("must not be null", field)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("integer" if k is int else "text" if k is str else k.__name__ for k in kinds)
            raise self.error(f"expected {names}, got {type(value).__name__}", field)
        if isinstance(value, int) and not isinstance(value, bool):
            self.check_int64(value, field)
        return value

    def check_int64(self, value: int, field: str) -> None:
        # SQLite integers are 64-bit; a larger JSON number would abort the import with an OverflowError.
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise self.error(
                f"integer {value} is out of range (it must fit in 64 bits: {_INT64_MIN} to {_INT64_MAX})", field
            )

    def text(self, rec: dict[str, Any], field: str, *, nullable: bool = False, required: bool = True) -> str | None:
        value = self.get(rec, field, (str,), nullable=nullable, required=required)
        if value is not None:
            try:
                check_size(value, field, self.max_chars)
            except MessageError as e:
                raise self.error(e.detail, field) from None
        return value

    def choice(self, rec: dict[str, Any], field: str, allowed: tuple[str, ...], *, nullable: bool = False) -> str | None:
        value = self.get(rec, field, (str,), nullable=nullable)
        if value is not None and value not in allowed:
            raise self.error(f"{value!r} is not one of {', '.join(allowed)}", field)
        return value

    def count(self, rec: dict[str, Any], field: str) -> int | None:
        value = self.get(rec, field, (int,), nullable=True, required=False)
        if value is not None and value < 0:
            raise self.error("must not be negative", field)
        return value

    def stamp(self, rec: dict[str, Any], field: str, *, nullable: bool = True) -> str | None:
        value = self.get(rec, field, (str,), nullable=nullable, required=not nullable)
        if value is None:
            return None
        if not value.strip():
            raise self.error("empty timestamp", field)
        # Timestamps are compared as text and parsed by the queue and the dashboard: they must be ISO 8601 with a
        # UTC offset, as the store writes them.
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise self.error(
                f"{value!r} is not an ISO 8601 timestamp with a UTC offset (like 2026-01-31T09:30:00.000+00:00)", field
            )
        return value

    def guideline(self, rec: dict[str, Any]) -> int | None:
        value = self.count(rec, "guideline_version")
        # A version the file did not define keeps its number (the file came from a store that had it).
        return self.guidelines.get(value, value) if value is not None else None

    def prompt_ref(self, rec: dict[str, Any], field: str = "prompt") -> tuple[str, int]:
        h = self.get(rec, field, (str,))
        pid = self.prompts.get(h)
        if pid is None:
            row = self.project.prompt_by_hash(h)
            if row is None:
                raise self.error("refers to a prompt that is neither earlier in the file nor in the project", field)
            pid = self.prompts[h] = row[0]
        return h, pid

    def response_ref(self, ph: str, pid: int, h: Any, field: str) -> int:
        if not isinstance(h, str):
            raise self.error(f"expected a response hash (text), got {type(h).__name__}", field)
        rid = self.responses.get((ph, h))
        if rid is None:
            found = self.project.response_by_hash(pid, h)
            if found is None:
                raise self.error("refers to a response that is neither earlier in the file nor in the project", field)
            rid = self.responses[(ph, h)] = found
        return rid

    # ------------------------------------------------------------------ records
    def record(self, line: int, rec: dict[str, Any]) -> None:
        self.line = line
        kind = rec.get("type")
        if kind not in RECORD_TYPES:
            raise self.error(f"unknown record type {kind!r} (expected one of {', '.join(RECORD_TYPES)})", "type")
        self.seen[kind] += 1
        self.report.records += 1
        getattr(self, f"_{kind}")(rec)

    def _guideline(self, rec: dict[str, Any]) -> None:
        version = self.get(rec, "version", (int,))
        text = self.text(rec, "text")
        created_at = self.stamp(rec, "created_at", nullable=False)
        row = self.project.guideline_with_text(text)
        if row:
            self.guidelines[version] = row[0]
            if created_at < row[1]:
                # the same text was a guideline earlier elsewhere: keep the first time it was (ISO times sort)
                self.project.set_guideline_created_at(row[0], created_at)
            return
        self.guidelines[version] = self.project.insert_guideline_version(text, created_at)
        self.report.add("guideline versions")

    def _category(self, rec: dict[str, Any]) -> None:
        key = self.get(rec, "key", (str,))
        if not key or not key.replace("_", "").replace("-", "").isalnum():
            raise self.error(f"category key {key!r}: use letters, digits, '-' and '_'", "key")
        label = self.text(rec, "label")
        description = self.text(rec, "description", required=False) or ""
        builtin = self.get(rec, "builtin", (bool,), required=False) or False
        row = self.project.category_label(key)
        if row is None:
            self.project.insert_category(key, label, description, builtin)
            self.report.add("flag categories")
        elif not builtin:
            same = (row[0], row[1]) == (label, description)
            self.report.skip("category already in the project" if same else "category already in the project with another label (kept the project's)")

    def _prompt(self, rec: dict[str, Any]) -> None:
        try:
            messages = validate_messages(rec.get("messages"), field="messages", max_chars=self.max_chars)
        except MessageError as e:
            raise self.error(e.detail, e.field) from None
        h = prompt_hash(messages)
        given = self.get(rec, "hash", (str,), required=False)
        if given is not None and given != h:
            raise self.error("does not match the messages (was the file edited?)", "hash")
        source = self.text(rec, "source", required=False) or ""
        split = self.choice(rec, "split", SPLITS)
        created_at = self.stamp(rec, "created_at", nullable=False)
        tags = self.get(rec, "tags", (list,), required=False) or []
        if not all(isinstance(t, str) and t for t in tags):
            raise self.error("expected a list of non-empty texts", "tags")
        row = self.project.prompt_by_hash(h)
        if row is None:
            pid = self.project.insert_prompt(
                canonical_json(messages), last_user_text(messages)[:500], source, split, h, created_at
            )
            self.report.add("prompts")
        else:
            pid = row[0]
            if split == "heldout" and row[1] != "heldout":
                # Held out on either side stays held out: the source's held-out prompts must not enter training here.
                self.project.hold_out_prompt(pid)
                self.report.add("prompts moved to the held-out set")
            else:
                self.report.skip(
                    "prompt already in the project" if row[1] == split
                    else f"prompt already in the project as {row[1]} (kept its split, not {split})"
                )
        self.prompts[h] = pid
        if tags:
            added = self.project.tag_prompt(pid, dict.fromkeys(tags))
            if row is not None and added > 0:
                self.report.add("prompt tags", added)

    def _response(self, rec: dict[str, Any]) -> None:
        ph, pid = self.prompt_ref(rec)
        content = self.text(rec, "content")
        h = response_hash(content)
        given = self.get(rec, "hash", (str,), required=False)
        if given is not None and given != h:
            raise self.error("does not match the content (was the file edited?)", "hash")
        origin = self.choice(rec, "origin", ORIGINS)
        source = self.text(rec, "source", required=False) or ""
        model = self.text(rec, "model", nullable=True, required=False)
        adapter = self.text(rec, "adapter", nullable=True, required=False)
        sampling = self.get(rec, "sampling", (dict,), nullable=True, required=False)
        seed = self.get(rec, "seed", (int,), nullable=True, required=False)
        created_at = self.stamp(rec, "created_at", nullable=False)
        rid = self.project.response_by_hash(pid, h)
        if rid is None:
            rid = self.project.insert_response(
                pid, content, origin, source, model, adapter,
                canonical_json(sampling) if sampling is not None else None, seed, h, created_at,
            )
            self.report.add("responses")
        else:
            self.report.skip("response already in the project")
        self.responses[(ph, h)] = rid

    def _retest(self, rec: dict[str, Any], table: str, new_id: int | None) -> None:
        ref = self.get(rec, "retest_of", (str,), nullable=True, required=False)
        if ref is not None and new_id is not None:
            self.retest_links.append((table, new_id, ref, self.line))

    def _comparison(self, rec: dict[str, Any]) -> None:
        key = self.get(rec, "key", (str,))
        ph, pid = self.prompt_ref(rec)
        ah, bh = rec.get("a"), rec.get("b")
        a = self.response_ref(ph, pid, ah, "a")
        b = self.response_ref(ph, pid, bh, "b")
        if a == b:
            raise self.error("a comparison needs two different responses", "b")
        verdict = self.choice(rec, "verdict", VERDICTS, nullable=True)
        strength = self.choice(rec, "strength", STRENGTHS, nullable=True)
        if strength is not None and verdict not in ("a", "b"):
            raise self.error("a strength applies only to a verdict for a or b", "strength")
        left_side = self.choice(rec, "left_side", ("a", "b"), nullable=True)
        criteria = self.get(rec, "criteria", (dict,), nullable=True, required=False)
        for k, v in (criteria or {}).items():
            if k not in CRITERIA or v not in CRITERION_VERDICTS:
                raise self.error(f"criterion {k!r}: {v!r} (criteria are {', '.join(CRITERIA)}; verdicts {', '.join(CRITERION_VERDICTS)})", "criteria")
        values = dict(
            left_side=left_side, verdict=verdict, strength=strength,
            criteria=canonical_json(criteria) if criteria else None,
            note=self.text(rec, "note", nullable=True, required=False),
            time_spent_ms=self.count(rec, "time_spent_ms"), guideline_version=self.guideline(rec),
            judged_at=self.stamp(rec, "judged_at"), retracted_at=self.stamp(rec, "retracted_at"),
        )
        source = self.text(rec, "source", required=False) or ""
        kind = self.choice(rec, "kind", ("train", "eval"))
        created_at = self.stamp(rec, "created_at", nullable=False)
        retest_ref = self.get(rec, "retest_of", (str,), nullable=True, required=False)

        # the same row (its key) already here?
        same = self.project.comparisons_created_at(a, b, created_at)
        for occ, (cid, existing_verdict) in enumerate(same):
            if _key("comparison", ph, ah, bh, created_at, occ) == key:
                self.keys["comparison"][key] = cid
                if existing_verdict is None and verdict is not None:
                    self.project.fill_comparison(cid, values)
                    self.report.add("judgments of pending comparisons")
                else:
                    self.report.skip("comparison already in the project")
                return
        if retest_ref is None and values["retracted_at"] is None:
            dup = self._duplicate_comparison(a, b, verdict, strength, source)
            if dup is not None:
                self.keys["comparison"][key] = dup
                self.report.skip(
                    "duplicate of a judgment already in the project" if verdict
                    else "pair already queued or judged in the project"
                )
                return
        cid = self.project.insert_comparison(pid, a, b, values, source=source, kind=kind, created_at=created_at)
        self.keys["comparison"][key] = cid
        self._retest(rec, "comparison", cid)
        self.report.add("comparisons")

    def _duplicate_comparison(self, a: int, b: int, verdict: str | None, strength: str | None, source: str) -> int | None:
        """A comparison of the same pair the project already had: for a judged row, one with the same judgment
        (either orientation) from the same source; for a pending row, any unretracted one."""
        rows = self.project.live_comparisons_of_pair(a, b, max_id=self.before["comparison"])
        for cid, ra, v, s, src in rows:
            if verdict is None:
                return cid
            flipped = {"a": "b", "b": "a"}.get(v, v) if ra != a else v
            if (flipped, s, src) == (verdict, strength, source):
                return cid
        return None

    def _ranking(self, rec: dict[str, Any]) -> None:
        key = self.get(rec, "key", (str,))
        ph, pid = self.prompt_ref(rec)
        entries = self.get(rec, "entries", (list,))
        if not 2 <= len(entries) <= 9:
            raise self.error(f"a ranking orders 2 to 9 responses, not {len(entries)}", "entries")
        ranks: dict[int, int] = {}
        for i, entry in enumerate(entries):
            where = f"entries[{i}]"
            if not (isinstance(entry, list) and len(entry) == 2):
                raise self.error("expected [response hash, rank]", where)
            rid = self.response_ref(ph, pid, entry[0], where)
            rank = entry[1]
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
                raise self.error(f"rank must be a positive integer, not {rank!r}", where)
            self.check_int64(rank, where)
            if rid in ranks:
                raise self.error("the same response is ranked twice", where)
            ranks[rid] = rank
        values = dict(
            note=self.text(rec, "note", nullable=True, required=False), time_spent_ms=self.count(rec, "time_spent_ms"),
            guideline_version=self.guideline(rec), source=self.text(rec, "source", required=False) or "",
            judged_at=self.stamp(rec, "judged_at"), retracted_at=self.stamp(rec, "retracted_at"),
        )
        created_at = self.stamp(rec, "created_at", nullable=False)
        retest_ref = self.get(rec, "retest_of", (str,), nullable=True, required=False)
        same = self.project.rankings_created_at(pid, created_at)
        for occ, rk in enumerate(same):
            if _key("ranking", ph, created_at, occ) == key:
                self.keys["ranking"][key] = rk
                self.report.skip("ranking already in the project")
                return
        if retest_ref is None and values["retracted_at"] is None:
            for rk in self.project.live_rankings_of_source(pid, values["source"], max_id=self.before["ranking"]):
                if self.project.get_ranking(rk) == dict(sorted(ranks.items(), key=lambda kv: (kv[1], kv[0]))):
                    self.keys["ranking"][key] = rk
                    self.report.skip("duplicate of a ranking already in the project")
                    return
        rk = self.project.insert_ranking(pid, ranks, created_at=created_at, **values)
        self.keys["ranking"][key] = rk
        self._retest(rec, "ranking", rk)
        self.report.add("rankings")

    def _demonstration(self, rec: dict[str, Any]) -> None:
        ph, pid = self.prompt_ref(rec)
        rid = self.response_ref(ph, pid, rec.get("response"), "response")
        edited = rec.get("edited_from")
        if edited is None:
            edited_id = None
        elif isinstance(edited, list) and len(edited) == 2:
            eph, epid = self.prompt_ref({"prompt": edited[0]})
            edited_id = self.response_ref(eph, epid, edited[1], "edited_from")
        else:
            edited_id = self.response_ref(ph, pid, edited, "edited_from")
        values = dict(
            note=self.text(rec, "note", nullable=True, required=False), time_spent_ms=self.count(rec, "time_spent_ms"),
            guideline_version=self.guideline(rec), source=self.text(rec, "source", required=False) or "",
            retracted_at=self.stamp(rec, "retracted_at"), created_at=self.stamp(rec, "created_at", nullable=False),
        )
        if self.project.has_demonstration(rid):
            self.report.skip("demonstration already in the project")
            return
        self.project.insert_demonstration(pid, rid, edited_id, **values)
        self.report.add("demonstrations")

    def _flag(self, rec: dict[str, Any]) -> None:
        key = self.get(rec, "key", (str,))
        ph, pid = self.prompt_ref(rec)
        rh = rec.get("response")
        rid = None if rh is None else self.response_ref(ph, pid, rh, "response")
        category = self.get(rec, "category", (str,))
        if self.project.category_label(category) is None:
            raise self.error(f"unknown category {category!r} (defined neither in the file nor in the project)", "category")
        present = self.get(rec, "present", (bool,))
        severity = self.choice(rec, "severity", SEVERITIES, nullable=True)
        if present and severity is None:
            raise self.error("a present flag needs a severity", "severity")
        note = self.text(rec, "note", nullable=True, required=False)
        source = self.text(rec, "source", required=False) or ""
        gv = self.guideline(rec)
        retracted_at = self.stamp(rec, "retracted_at")
        created_at = self.stamp(rec, "created_at", nullable=False)
        same = self.project.flags_created_at(pid, rid, category, created_at)
        for occ, _fid in enumerate(same):
            if _key("flag", ph, rh, category, created_at, occ) == key:
                self.report.skip("flag already in the project")
                return
        if retracted_at is None and self.project.has_live_flag(
            pid, rid, category, present, severity, max_id=self.before["safety_flag"]
        ):
            self.report.skip("duplicate of a flag already in the project")
            return
        self.project.insert_flag(pid, rid, category, present, severity, note=note, source=source, guideline_version=gv,
                                 retracted_at=retracted_at, created_at=created_at)
        self.report.add("flags")

    # ------------------------------------------------------------------ end of file
    def finish(self, counts: Any, last_line: int) -> None:
        for table, row_id, ref, line in self.retest_links:
            target = self.keys[table].get(ref)
            if target is None:
                self.line = line
                raise self.error(f"refers to a {table} that is not in the file", "retest_of")
            self.project.link_retest(table, row_id, target)
        if isinstance(counts, dict):
            for kind in RECORD_TYPES:
                promised = counts.get(kind)
                if isinstance(promised, int) and promised != self.seen[kind]:
                    self.line = last_line
                    raise self.error(
                        f"the header lists {promised} {kind} records but the file holds {self.seen[kind]}"
                        " (cut short or edited?)",
                    )
