"""Staging and bulk writing: format parsers stage rows here; one function writes them with the store's bulk inserts.

Parsers never touch the database. They validate every record and stage prompts, responses, comparisons,
demonstrations and safety flags keyed by content hash; redundancy inside the file is detected and counted as it is
staged. :func:`write_staged` then runs inside the caller's transaction: it looks up which rows already exist in the
project (the store's bulk look-ups, a handful of ``IN (…)`` queries), skips and counts duplicates of those, and
inserts the rest with the store's bulk inserts (``executemany``, explicit ids). The semantics are the store's (``Project.add_prompt`` and friends): prompts are
unique by ``prompt_hash``, responses by ``(prompt, response_hash)``, stored messages are ``canonical_json`` and a
prompt's title is its last user text cut to 500 characters; an existing prompt keeps its source and gains tags.

Imported judgments carry no guideline version (they were not made under this project's guideline) and their
``judged_at`` is the import time; ``left_side`` stays NULL because nothing was shown. A pair the project already
holds judged (and not retracted) is skipped; a pair only queued as pending takes the imported judgment on that row
(counted as "judgments of pending comparisons"), except a pending retest or blind-evaluation item.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # what JSONEncoder(ensure_ascii=False) uses for a str (C code)
from typing import Any

from ..messages import last_user_text
from ..reports import ImportReport
from ..store import Project, now_iso

PKey = str  # a prompt's content hash
RKey = tuple[str, str]  # (prompt hash, response hash)

# Skip reasons shared by every format, so reports read the same whatever the file was.
DUP_PROMPT_FILE = "duplicate prompt earlier in the file"
DUP_PROMPT_PROJECT = "prompt already in the project"
DUP_RESPONSE_FILE = "duplicate response earlier in the file"
DUP_RESPONSE_PROJECT = "response already in the project"
DUP_COMPARISON_FILE = "duplicate of a comparison earlier in the file"
SELF_COMPARISON = "a response compared with itself"
CONFLICT_COMPARISON_FILE = "same pair judged the other way earlier in the file"
DUP_COMPARISON_PROJECT = "duplicate of a comparison already in the project"
PENDING_EVAL_PROJECT = "pair is queued for blind evaluation in the project"
DUP_DEMO_FILE = "duplicate of a demonstration earlier in the file"
DUP_DEMO_PROJECT = "duplicate of a demonstration already in the project"
DUP_FLAG_FILE = "duplicate of a flag earlier in the file"
DUP_FLAG_PROJECT = "duplicate of a flag already in the project"

PENDING_JUDGED = "judgments of pending comparisons"  # report key: a queued pair that took the imported verdict
ABSENT_LABELS = "labels marked absent"  # report key for safety_flag rows with present = 0

# The same bytes as messages.canonical_json / prompt_hash / response_hash (a test checks it), without building a
# new encoder per call and without encoding a prompt twice (once to store, once to hash): on 8.5k HH pairs that is
# a good part of the import time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def prompt_json_and_hash(messages: list[dict[str, str]]) -> tuple[str, str]:
    """(canonical JSON of the messages as stored, ``prompt_hash(messages)``)."""
    if all(len(m) == 2 and "role" in m and "content" in m for m in messages):
        # The usual {role, content} messages, laid out as sort_keys would: no generic encoder needed.
        text = "[" + ",".join(
            '{"content":' + encode_basestring(m["content"]) + ',"role":' + encode_basestring(m["role"]) + "}"
            for m in messages
        ) + "]"
    else:
        text = _ENCODER.encode(messages)
    return text, hashlib.sha256(('["prompt",' + text + "]").encode("utf-8")).hexdigest()


def fast_response_hash(content: str) -> str:
    """``response_hash(content)``."""
    return hashlib.sha256(('["response",' + encode_basestring(content) + "]").encode("utf-8")).hexdigest()


@dataclass
class _Prompt:
    messages: list[dict[str, str]]
    json: str
    source: str
    tags: dict[str, None] = field(default_factory=dict)  # an ordered set
    standalone: bool = False  # a record whose only content is this prompt (counts as skipped when not new)


@dataclass
class _Response:
    content: str
    origin: str
    source: str
    model: str | None
    standalone: bool = False


@dataclass
class _Comparison:
    prompt: PKey
    a: RKey
    b: RKey
    verdict: str
    strength: str | None
    source: str
    note: str | None


@dataclass
class _Demonstration:
    prompt: PKey
    response: RKey
    source: str
    note: str | None


@dataclass
class _Flag:
    prompt: PKey
    response: RKey | None
    category: str
    present: bool
    severity: str | None
    note: str | None
    source: str


class Staging:
    """Rows a parser wants written, de-duplicated within the file (counted in ``report.skipped``)."""

    def __init__(self, report: ImportReport):
        self.report = report
        self.prompts: dict[PKey, _Prompt] = {}
        self.responses: dict[RKey, _Response] = {}
        self.comparisons: list[_Comparison] = []
        self.demonstrations: list[_Demonstration] = []
        self.flags: list[_Flag] = []
        self._pairs: dict[tuple[PKey, frozenset[str]], Any] = {}
        self._demo_keys: set[RKey] = set()
        self._flag_keys: set[tuple[Any, ...]] = set()

    def prompt(
        self, messages: list[dict[str, str]], *, source: str, tags: Iterable[str] = (), standalone: bool = False
    ) -> PKey:
        """Stage a (validated) conversation; returns its key. Equal conversations merge (tags are unioned)."""
        text, h = prompt_json_and_hash(messages)
        p = self.prompts.get(h)
        if p is None:
            p = self.prompts[h] = _Prompt(messages, text, source, standalone=standalone)
        elif standalone:
            if p.standalone:
                self.report.skip(DUP_PROMPT_FILE)
            p.standalone = True
        for t in tags:
            if t:
                p.tags[t] = None
        return h

    def response(
        self,
        prompt: PKey,
        content: str,
        *,
        source: str,
        origin: str = "imported",
        model: str | None = None,
        standalone: bool = False,
    ) -> RKey:
        key = (prompt, fast_response_hash(content))
        r = self.responses.get(key)
        if r is None:
            self.responses[key] = _Response(content, origin, source, model, standalone)
        elif standalone:
            if r.standalone:
                self.report.skip(DUP_RESPONSE_FILE)
            r.standalone = True
        return key

    def comparison(
        self, prompt: PKey, a: RKey, b: RKey, *, verdict: str, strength: str | None, source: str, note: str | None = None
    ) -> bool:
        """Stage a judged comparison (``a``/``b`` are response_a/response_b). False when redundant (counted)."""
        if a == b:
            # Parsers skip identical replies themselves; this keeps a missed case from reaching the table's CHECK.
            self.report.skip(SELF_COMPARISON)
            return False
        pair = (prompt, frozenset((a[1], b[1])))
        # What the judgment says regardless of which side is "a": the winner, or the tie / both-bad verdict.
        outcome: Any = a if verdict == "a" else b if verdict == "b" else verdict
        earlier = self._pairs.get(pair)
        if earlier is not None:
            self.report.skip(DUP_COMPARISON_FILE if earlier == outcome else CONFLICT_COMPARISON_FILE)
            return False
        self._pairs[pair] = outcome
        self.comparisons.append(_Comparison(prompt, a, b, verdict, strength, source, note))
        return True

    def demonstration(self, prompt: PKey, response: RKey, *, source: str, note: str | None = None) -> bool:
        if response in self._demo_keys:
            self.report.skip(DUP_DEMO_FILE)
            return False
        self._demo_keys.add(response)
        self.demonstrations.append(_Demonstration(prompt, response, source, note))
        return True

    def flag(
        self,
        prompt: PKey,
        category: str,
        *,
        present: bool,
        severity: str | None,
        note: str | None,
        source: str,
        response: RKey | None = None,
    ) -> bool:
        key = (prompt, response, category, present, severity, source)
        if key in self._flag_keys:
            self.report.skip(DUP_FLAG_FILE)
            return False
        self._flag_keys.add(key)
        self.flags.append(_Flag(prompt, response, category, present, severity, note, source))
        return True


def _added(report: ImportReport, what: str, n: int) -> None:
    if n:
        report.add(what, n)


def write_staged(project: Project, st: Staging) -> None:
    """Write everything staged, skipping (and counting) what the project already holds. Call inside
    ``project.transaction()``: this function neither begins nor commits."""
    report, now = st.report, now_iso()

    # ---- prompts
    hashes = list(st.prompts)
    existing_prompts = project.prompt_ids_by_hash(hashes)
    prompt_id: dict[PKey, int] = {}
    new_prompts = []
    nid = project.next_row_id("prompt")
    for h, p in st.prompts.items():
        if h in existing_prompts:
            prompt_id[h] = existing_prompts[h]
            if p.standalone:
                report.skip(DUP_PROMPT_PROJECT)
            continue
        prompt_id[h] = nid
        new_prompts.append((nid, p.json, last_user_text(p.messages)[:500], p.source, "train", h, now))
        nid += 1
    project.insert_prompts(new_prompts)
    _added(report, "prompts", len(new_prompts))
    project.insert_prompt_tags([(prompt_id[h], t) for h, p in st.prompts.items() for t in p.tags])
    old_prompt_ids = sorted({existing_prompts[h] for h in hashes if h in existing_prompts})

    # ---- responses
    existing_responses = project.response_ids_of_prompts(old_prompt_ids)
    response_id: dict[RKey, int] = {}
    old_response_ids: set[int] = set()
    new_responses = []
    nid = project.next_row_id("response")
    for key, r in st.responses.items():
        pid = prompt_id[key[0]]
        rid = existing_responses.get((pid, key[1]))
        if rid is not None:
            response_id[key] = rid
            old_response_ids.add(rid)
            if r.standalone:
                report.skip(DUP_RESPONSE_PROJECT)
            continue
        response_id[key] = nid
        new_responses.append((nid, pid, r.content, r.origin, r.source, r.model, key[1], now))
        nid += 1
    project.insert_responses(new_responses)
    _added(report, "responses", len(new_responses))

    # ---- comparisons
    if st.comparisons:
        # Only a live judgment makes an imported one redundant. A pair merely queued (pending) takes the imported
        # judgment instead, as in the project exchange; a pending retest or blind-evaluation item does not (the
        # expert's own re-judgment and eval items must not be filled with someone else's verdict).
        existing_pairs = project.judged_pairs_of_prompts(old_prompt_ids)
        pending: dict[frozenset[int], tuple[int, int]] = {}  # pair -> (comparison id, its response_a)
        held_for_eval: set[frozenset[int]] = set()
        for cid, ra, rb, kind, retest_of in project.pending_comparisons_of_prompts(old_prompt_ids):
            pair = frozenset((ra, rb))
            if kind == "eval":
                held_for_eval.add(pair)
            elif retest_of is None:
                pending.setdefault(pair, (cid, ra))
        rows, updates = [], []
        for c in st.comparisons:
            a, b = response_id[c.a], response_id[c.b]
            pair = frozenset((a, b))
            if pair in existing_pairs:
                report.skip(DUP_COMPARISON_PROJECT)
                continue
            if pair in pending:
                cid, ra = pending.pop(pair)
                verdict = c.verdict if ra == a else {"a": "b", "b": "a"}.get(c.verdict, c.verdict)
                updates.append((verdict, c.strength, c.note, now, cid))
                continue
            if pair in held_for_eval:
                report.skip(PENDING_EVAL_PROJECT)
                continue
            rows.append((prompt_id[c.prompt], a, b, c.verdict, c.strength, c.note, now, c.source, now))
        project.insert_judged_comparisons(rows)
        # guideline_version stays NULL: the judgment was not made under this project's guideline.
        project.judge_pending_imported(updates)
        _added(report, "comparisons", len(rows))
        _added(report, PENDING_JUDGED, len(updates))

    # ---- demonstrations (one per response: the table's UNIQUE(response_id))
    if st.demonstrations:
        demo_taken = project.demonstrated_responses(sorted(old_response_ids))
        rows = []
        for d in st.demonstrations:
            rid = response_id[d.response]
            if rid in demo_taken:
                report.skip(DUP_DEMO_PROJECT)
                continue
            rows.append((prompt_id[d.prompt], rid, d.note, d.source, now))
        project.insert_demonstrations(rows)
        _added(report, "demonstrations", len(rows))

    # ---- safety flags (on a response, or on the prompt text when response is None)
    if st.flags:
        existing_flags = project.live_flag_keys_of_prompts(old_prompt_ids)
        rows = []
        for f in st.flags:
            pid = prompt_id[f.prompt]
            rid = response_id[f.response] if f.response is not None else None
            if (pid, rid, f.category, int(f.present), f.severity, f.source) in existing_flags:
                report.skip(DUP_FLAG_PROJECT)
                continue
            rows.append((pid, rid, f.category, int(f.present), f.severity, f.note, f.source, now))
        project.insert_flags(rows)
        # Counted as ``stats()`` counts them: "flags" are present ones; a present = 0 row is a negative label.
        _added(report, "flags", sum(1 for r in rows if r[3]))
        _added(report, ABSENT_LABELS, sum(1 for r in rows if not r[3]))
