"""Which rows train a model: the one place that selects judgments, freezes them in snapshots and turns them into
training examples. The exporters and the engine both read training data through this module, so a file written
for TRL and a run trained inside the app see exactly the same rows.

The rules (every selector, unless a flag says otherwise):

- a judgment counts only when it is judged (comparisons: a verdict; rankings: always judged) and not retracted;
- ``kind = 'eval'`` comparisons never enter training (``include_eval`` overrides; rankings have no kind);
- retests (``retest_of`` set) are left out: the original judgment already carries the signal;
- prompts of split ``heldout`` never enter a training snapshot; ``split="heldout"`` selects *only* them (the
  held-out set for evaluation), ``include_heldout=True`` takes both splits;
- ties and both-bad verdicts are left out of preference data unless asked for.

A snapshot freezes the selected row ids (``project.create_snapshot``); the example builders read a snapshot, not
the live tables, so a run is reproducible even after later judgments are retracted (retracted rows stay in the
file for exactly this reason). Snapshots are taken atomically: selection and freezing run in one write transaction,
so a judgment undone from another window (or process) in between cannot leave a pending or deleted row frozen.

Turning rows into examples:

- **preference pairs**: a comparison with verdict ``a``/``b`` is one pair (margin from its strength); a tie is a
  pair with ``tie=True`` (chosen = response A, rejected = response B, margin 0) only when the snapshot was taken
  with ``include_ties``; a both-bad verdict is never a pair (see :func:`both_bad_comparisons`). A k-wise ranking
  expands into every pair of responses with different ranks (better rank chosen, margin 0); equal ranks make tie
  pairs only under ``include_ties``.
- **SFT examples**: every demonstration; with ``include_winners`` also the winning response of each ``clear`` or
  ``strong`` A/B judgment (slight wins are too weak to imitate), unless that response lost any other unretracted,
  non-retest judgment or carries a present, unretracted safety flag. One example per response (a demonstration
  wins over a duplicate winner).
- **KTO examples** (unpaired): chosen responses and demonstrations are desirable (``label=True``), rejected ones
  undesirable; with ``include_both_bad`` both sides of a both-bad verdict are undesirable; a ranking's best
  rank is desirable and its worst rank undesirable (middle ranks say nothing absolute). One example per
  (response, label).
- **safety examples**: flags grouped by the text they are on (a response, or the prompt itself): categories
  present, categories checked and known absent (``present = 0`` rows), the highest severity. A category with no
  row is unknown, not absent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import WorkbenchError
from .store import Project
from .taxonomy import DEFAULT_STRENGTH_MARGIN, SEVERITIES

WINNER_STRENGTHS = ("clear", "strong")


@dataclass
class PreferencePair:
    """One training pair. ``prompt`` is a list of messages shared between pairs of the same prompt: do not mutate."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    margin: float
    strength: str | None
    tie: bool
    comparison_id: int | None
    ranking_id: int | None
    prompt_id: int
    chosen_id: int = 0
    rejected_id: int = 0


@dataclass
class SFTExample:
    prompt: list[dict[str, str]]
    completion: str
    demonstration_id: int | None
    comparison_id: int | None
    prompt_id: int
    response_id: int = 0


@dataclass
class KTOExample:
    prompt: list[dict[str, str]]
    completion: str
    label: bool
    prompt_id: int
    response_id: int


@dataclass
class SafetyExample:
    """Labels for one text: ``categories`` present, ``absent`` known absent; any other category is unknown."""

    text: str
    categories: list[str]
    absent: list[str]
    severity: str | None
    prompt_id: int
    response_id: int | None
    prompt: list[dict[str, str]] = field(default_factory=list)
    flag_ids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- selection
def _wanted_split(split: str | None, include_heldout: bool) -> str | None:
    """The prompt split a selection keeps (None: both)."""
    if split is not None and split not in ("train", "heldout"):
        raise WorkbenchError(f"split must be train or heldout, not {split!r}")
    if split is None and include_heldout:
        return None
    return split or "train"


def _classify_comparisons(
    project: Project,
    *,
    include_ties: bool,
    include_both_bad: bool,
    include_retests: bool,
    include_eval: bool,
    include_heldout: bool,
    split: str | None,
) -> tuple[list[int], Counter[str]]:
    """One pass over the judged comparisons: the ids the filters keep, and why each other one is left out (the
    first reason that applies). Pending rows are counted from their index, not read."""
    wanted = _wanted_split(split, include_heldout)
    verdicts = {"a", "b"} | ({"tie"} if include_ties else set()) | ({"both_bad"} if include_both_bad else set())
    off_split = "held-out prompt" if wanted == "train" else "training prompt"
    keep: list[int] = []
    left_out: Counter[str] = Counter()
    for cid, verdict, retracted, retest, kind, psplit in project.judged_comparison_facts():
        if retracted:
            left_out["retracted"] += 1
        elif retest and not include_retests:
            left_out["retest"] += 1
        elif kind == "eval" and not include_eval:
            left_out["eval item"] += 1
        elif wanted is not None and psplit != wanted:
            left_out[off_split] += 1
        elif verdict not in verdicts:
            left_out["tie" if verdict == "tie" else "both bad"] += 1
        else:
            keep.append(cid)
    keep.sort()
    pending = project.unjudged_count()
    if pending:
        left_out["pending (no verdict)"] = pending
    return keep, left_out


def _classify_rankings(
    project: Project, *, include_retests: bool, include_heldout: bool, split: str | None
) -> tuple[list[int], Counter[str]]:
    wanted = _wanted_split(split, include_heldout)
    keep: list[int] = []
    left_out: Counter[str] = Counter()
    for rk, retracted, retest, psplit in project.ranking_facts():
        if retracted:
            left_out["retracted ranking"] += 1
        elif retest and not include_retests:
            left_out["retest ranking"] += 1
        elif wanted is not None and psplit != wanted:
            left_out["ranking of a " + ("held-out prompt" if wanted == "train" else "training prompt")] += 1
        else:
            keep.append(rk)
    return keep, left_out


def _demonstration_ids(project: Project, *, include_heldout: bool, split: str | None) -> list[int]:
    return project.live_demonstration_ids(_wanted_split(split, include_heldout))


def preference_selection(
    project: Project,
    *,
    include_ties: bool = False,
    include_both_bad: bool = False,
    include_retests: bool = False,
    include_eval: bool = False,
    include_heldout: bool = False,
    split: str | None = None,
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """The preference items these filters keep, and counts of what they leave out by reason (for reports)."""
    comparisons, left_out = _classify_comparisons(
        project, include_ties=include_ties, include_both_bad=include_both_bad, include_retests=include_retests,
        include_eval=include_eval, include_heldout=include_heldout, split=split,
    )
    rankings, left_rankings = _classify_rankings(
        project, include_retests=include_retests, include_heldout=include_heldout, split=split
    )
    left_out.update(left_rankings)
    return {"comparison": comparisons, "ranking": rankings}, dict(left_out)


def select_preference_items(
    project: Project,
    *,
    include_ties: bool = False,
    include_both_bad: bool = False,
    include_retests: bool = False,
    include_eval: bool = False,
    include_heldout: bool = False,
    split: str | None = None,
) -> dict[str, list[int]]:
    """The comparisons and rankings preference training may use: ``{"comparison": [...], "ranking": [...]}``."""
    return preference_selection(
        project, include_ties=include_ties, include_both_bad=include_both_bad, include_retests=include_retests,
        include_eval=include_eval, include_heldout=include_heldout, split=split,
    )[0]


def preference_left_out(project: Project, **filters: Any) -> dict[str, int]:
    """What :func:`select_preference_items` with these filters leaves out, by reason."""
    return preference_selection(project, **filters)[1]


def preference_snapshot(
    project: Project,
    *,
    include_ties: bool = False,
    include_both_bad: bool = False,
    include_retests: bool = False,
    include_eval: bool = False,
    include_heldout: bool = False,
    split: str | None = None,
    note: str = "",
) -> int:
    """Freeze the preference items selected by these filters; returns the snapshot id (kind ``preference``)."""
    return preference_snapshot_reporting(
        project, include_ties=include_ties, include_both_bad=include_both_bad, include_retests=include_retests,
        include_eval=include_eval, include_heldout=include_heldout, split=split, note=note,
    )[0]


def preference_snapshot_reporting(project: Project, *, note: str = "", **filters: Any) -> tuple[int, dict[str, int]]:
    """:func:`preference_snapshot` that also returns what the filters left out, by reason (one selection pass)."""
    options: dict[str, Any] = dict(
        include_ties=False, include_both_bad=False, include_retests=False, include_eval=False, include_heldout=False,
        split=None,
    )
    unknown = set(filters) - set(options)
    if unknown:
        raise TypeError(f"unknown preference filters: {sorted(unknown)}")
    options.update(filters)
    with project.transaction():  # selection and freezing see one state (see the module docstring)
        items, left_out = preference_selection(project, **options)
        return project.create_snapshot("preference", items, options=options, note=note), left_out


def sft_snapshot(
    project: Project,
    *,
    include_winners: bool = False,
    winner_strengths: tuple[str, ...] = WINNER_STRENGTHS,
    include_eval: bool = False,
    include_heldout: bool = False,
    split: str | None = None,
    note: str = "",
) -> int:
    """Freeze demonstrations (and, with ``include_winners``, the comparisons whose winners qualify as SFT targets)."""
    options: dict[str, Any] = dict(
        include_winners=include_winners, winner_strengths=list(winner_strengths), include_eval=include_eval,
        include_heldout=include_heldout, split=split,
    )
    with project.transaction():
        items: dict[str, list[int]] = {
            "demonstration": _demonstration_ids(project, include_heldout=include_heldout, split=split)
        }
        if include_winners:
            items["comparison"] = _winner_comparison_ids(
                project, tuple(winner_strengths), include_eval=include_eval, include_heldout=include_heldout, split=split
            )
        return project.create_snapshot("sft", items, options=options, note=note)


def _winner_comparison_ids(
    project: Project, strengths: tuple[str, ...], *, include_eval: bool, include_heldout: bool, split: str | None
) -> list[int]:
    """One comparison (the earliest) per response that won a judgment of the given strengths, never lost one among
    the selectable judgments, and carries no present safety flag."""
    return project.winner_comparison_ids(
        strengths, include_eval=include_eval, split=_wanted_split(split, include_heldout)
    )


def kto_snapshot(
    project: Project,
    *,
    include_both_bad: bool = False,
    include_retests: bool = False,
    include_eval: bool = False,
    include_heldout: bool = False,
    include_demonstrations: bool = True,
    split: str | None = None,
    note: str = "",
) -> int:
    """Freeze the rows unpaired (KTO-style) data is made of: A/B comparisons (and both-bad ones if asked),
    rankings and demonstrations."""
    options = dict(
        include_both_bad=include_both_bad, include_retests=include_retests, include_eval=include_eval,
        include_heldout=include_heldout, include_demonstrations=include_demonstrations, split=split,
    )
    with project.transaction():
        items = select_preference_items(
            project, include_both_bad=include_both_bad, include_retests=include_retests, include_eval=include_eval,
            include_heldout=include_heldout, split=split,
        )
        if include_demonstrations:
            items["demonstration"] = _demonstration_ids(project, include_heldout=include_heldout, split=split)
        return project.create_snapshot("kto", items, options=options, note=note)


def safety_snapshot(project: Project, *, include_heldout: bool = False, split: str | None = None, note: str = "") -> int:
    """Freeze the unretracted safety labels (present and known-absent rows)."""
    with project.transaction():
        ids = project.live_flag_ids(_wanted_split(split, include_heldout))
        return project.create_snapshot(
            "safety", {"flag": ids}, options=dict(include_heldout=include_heldout, split=split), note=note
        )


# ---------------------------------------------------------------------------------------------- reading snapshots
def snapshot_options(project: Project, snapshot_id: int, kind: str | None = None) -> dict[str, Any]:
    """The options a snapshot was taken with; checks that it exists (and is of ``kind`` when given)."""
    snap = project.get_snapshot(snapshot_id)
    if snap is None:
        raise WorkbenchError(f"no snapshot with id {snapshot_id}")
    if kind is not None and snap["kind"] != kind:
        raise WorkbenchError(f"snapshot {snapshot_id} holds {snap['kind']} data, not {kind} data")
    return snap["options"]


class PromptCache:
    """Prompt messages by id, loaded in one query per snapshot: ``json`` holds the stored text (canonical JSON, so
    exporters write it without re-encoding), ``messages`` the parsed lists (parsed on first use)."""

    def __init__(self, project: Project, snapshot_id: int, *, with_prompt_items: bool = False):
        self.json: dict[int, str] = project.snapshot_prompt_messages(snapshot_id, with_prompt_items=with_prompt_items)
        self._messages: dict[int, list[dict[str, str]]] | None = None

    @property
    def messages(self) -> dict[int, list[dict[str, str]]]:
        if self._messages is None:
            self._messages = {pid: json.loads(text) for pid, text in self.json.items()}
        return self._messages


def comparison_rows(project: Project, snapshot_id: int) -> Iterator[tuple[Any, ...]]:
    """The snapshot's comparisons: (id, prompt_id, verdict, strength, response_a id, content A, response_b id,
    content B), in id order. One joined query: this is the export's hot path."""
    return project.snapshot_comparison_rows(snapshot_id)


def ranking_groups(project: Project, snapshot_id: int) -> list[tuple[int, int, list[tuple[int, int, str]]]]:
    """The snapshot's rankings as (ranking id, prompt id, [(rank, response id, content), ...] best first)."""
    groups: list[tuple[int, int, list[tuple[int, int, str]]]] = []
    for rk, pid, rid, rank, content in project.snapshot_ranking_rows(snapshot_id):
        if not groups or groups[-1][0] != rk:
            groups.append((rk, pid, []))
        groups[-1][2].append((rank, rid, content))
    return groups


def prompt_cache(project: Project, snapshot_id: int, *, with_prompt_items: bool = False) -> PromptCache:
    """Messages of every prompt a snapshot's comparisons, rankings or demonstrations refer to (and its ``prompt``
    items, with ``with_prompt_items``)."""
    return PromptCache(project, snapshot_id, with_prompt_items=with_prompt_items)


def ranking_pairs(
    entries: list[tuple[int, int, str]], *, include_ties: bool
) -> list[tuple[tuple[int, int, str], tuple[int, int, str], bool]]:
    """All pairs (better, worse, tie) of a ranking's entries (sorted best first): every two entries of different
    rank, plus equal-rank pairs as ties when asked."""
    out = []
    for i, better in enumerate(entries):
        for worse in entries[i + 1:]:
            if better[0] < worse[0]:
                out.append((better, worse, False))
            elif include_ties:
                out.append((better, worse, True))
    return out


PairRow = tuple[int, str, str, float, "str | None", bool, "int | None", "int | None", int, int]


def iter_preference_rows(
    project: Project,
    snapshot_id: int,
    *,
    margins: Mapping[str | None, float] = DEFAULT_STRENGTH_MARGIN,
    both_bad: list[tuple[int, int, str, str]] | None = None,
) -> Iterator[PairRow]:
    """The snapshot's judgments as pairs, lean: (prompt id, chosen, rejected, margin, strength, tie, comparison id,
    ranking id, chosen response id, rejected response id). The rules live here (see the module docstring);
    :func:`preference_pairs` and the exporters both read through it. Both-bad comparisons are not pairs; pass a
    list as ``both_bad`` to collect them (as in :func:`both_bad_comparisons`) in the same pass."""
    options = snapshot_options(project, snapshot_id, "preference")
    include_ties = bool(options.get("include_ties"))
    tie_margin = 0.0
    margin_of = {s: float(margins.get(s, 0.0)) for s in (*DEFAULT_STRENGTH_MARGIN, *margins)}
    for cid, pid, verdict, strength, ra, ca, rb, cb in comparison_rows(project, snapshot_id):
        if verdict == "a":
            yield pid, ca, cb, margin_of[strength], strength, False, cid, None, ra, rb
        elif verdict == "b":
            yield pid, cb, ca, margin_of[strength], strength, False, cid, None, rb, ra
        elif verdict == "tie" and include_ties:
            yield pid, ca, cb, tie_margin, None, True, cid, None, ra, rb
        elif verdict == "both_bad" and both_bad is not None:
            both_bad.append((cid, pid, ca, cb))  # no preferred side: never a pair
    rank_margin = margin_of[None]
    for rk, pid, entries in ranking_groups(project, snapshot_id):
        for better, worse, tie in ranking_pairs(entries, include_ties=include_ties):
            yield pid, better[2], worse[2], tie_margin if tie else rank_margin, None, tie, None, rk, better[1], worse[1]


def preference_pairs(
    project: Project, snapshot_id: int, *, margins: Mapping[str | None, float] = DEFAULT_STRENGTH_MARGIN
) -> list[PreferencePair]:
    """The snapshot's judgments as training pairs (see the module docstring for the rules)."""
    snapshot_options(project, snapshot_id, "preference")
    prompts = prompt_cache(project, snapshot_id).messages
    return [
        PreferencePair(prompts[pid], chosen, rejected, margin, strength, tie, cid, rk, pid, chosen_id, rejected_id)
        for pid, chosen, rejected, margin, strength, tie, cid, rk, chosen_id, rejected_id
        in iter_preference_rows(project, snapshot_id, margins=margins)
    ]


def both_bad_comparisons(project: Project, snapshot_id: int) -> list[tuple[int, int, str, str]]:
    """Both-bad comparisons a snapshot holds: (comparison id, prompt id, content A, content B). They are not
    preference pairs; the exporters write them only when asked, marked as such."""
    return [
        (cid, pid, ca, cb)
        for cid, pid, verdict, _s, _ra, ca, _rb, cb in comparison_rows(project, snapshot_id)
        if verdict == "both_bad"
    ]


def sft_examples(project: Project, snapshot_id: int) -> list[SFTExample]:
    """Demonstrations, then qualifying winners, one example per response (a demonstration wins a duplicate)."""
    snapshot_options(project, snapshot_id, "sft")
    prompts = prompt_cache(project, snapshot_id).messages
    out: list[SFTExample] = []
    seen: set[int] = set()
    for did, pid, rid, content in project.snapshot_demonstration_rows(snapshot_id):
        if rid not in seen:
            seen.add(rid)
            out.append(SFTExample(prompts[pid], content, did, None, pid, rid))
    for cid, pid, verdict, _s, ra, ca, rb, cb in comparison_rows(project, snapshot_id):
        rid, content = (ra, ca) if verdict == "a" else (rb, cb)
        if verdict in ("a", "b") and rid not in seen:
            seen.add(rid)
            out.append(SFTExample(prompts[pid], content, None, cid, pid, rid))
    return out


def kto_examples(project: Project, snapshot_id: int) -> list[KTOExample]:
    """Unpaired examples from a ``kto`` snapshot (or a ``preference`` one: then without demonstrations)."""
    snap = project.get_snapshot(snapshot_id)
    if snap is None:
        raise WorkbenchError(f"no snapshot with id {snapshot_id}")
    if snap["kind"] not in ("kto", "preference"):
        raise WorkbenchError(f"snapshot {snapshot_id} holds {snap['kind']} data, not kto or preference data")
    prompts = prompt_cache(project, snapshot_id).messages
    out: list[KTOExample] = []
    seen: set[tuple[int, bool]] = set()

    def add(pid: int, rid: int, content: str, label: bool) -> None:
        if (rid, label) not in seen:
            seen.add((rid, label))
            out.append(KTOExample(prompts[pid], content, label, pid, rid))

    for did, pid, rid, content in project.snapshot_demonstration_rows(snapshot_id):
        add(pid, rid, content, True)
    for _cid, pid, verdict, _s, ra, ca, rb, cb in comparison_rows(project, snapshot_id):
        if verdict == "a":
            add(pid, ra, ca, True)
            add(pid, rb, cb, False)
        elif verdict == "b":
            add(pid, rb, cb, True)
            add(pid, ra, ca, False)
        elif verdict == "both_bad":
            add(pid, ra, ca, False)
            add(pid, rb, cb, False)
    for _rk, pid, entries in ranking_groups(project, snapshot_id):
        best, worst = entries[0][0], entries[-1][0]
        if best == worst:
            continue  # all tied: no absolute signal
        for rank, rid, content in entries:
            if rank == best:
                add(pid, rid, content, True)
            elif rank == worst:
                add(pid, rid, content, False)
    return out


def _prompt_text(messages: list[dict[str, str]]) -> str:
    """The text a prompt-level flag is about: the lone message, or the conversation with role labels."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def safety_examples(project: Project, snapshot_id: int) -> list[SafetyExample]:
    """One example per flagged text (a response, or a prompt for prompt-level flags), in order of first flag."""
    snapshot_options(project, snapshot_id, "safety")
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    by_text: dict[tuple[int, int | None], SafetyExample] = {}
    prompt_json: dict[int, list[dict[str, str]]] = {}
    for fid, pid, rid, category, present, severity, pmsgs, content in project.snapshot_flag_rows(snapshot_id):
        key = (pid, rid)
        ex = by_text.get(key)
        if ex is None:
            if pid not in prompt_json:
                prompt_json[pid] = json.loads(pmsgs)
            msgs = prompt_json[pid]
            ex = by_text[key] = SafetyExample(content if rid is not None else _prompt_text(msgs), [], [], None, pid, rid, msgs)
        ex.flag_ids.append(fid)
        if present:
            if category not in ex.categories:
                ex.categories.append(category)
            if severity and (ex.severity is None or rank[severity] > rank[ex.severity]):
                ex.severity = severity
        elif category not in ex.absent:
            ex.absent.append(category)
    for ex in by_text.values():
        # a category flagged present by one row and absent by another: present wins (someone saw it)
        ex.absent = sorted(c for c in ex.absent if c not in ex.categories)
        ex.categories.sort()
    return list(by_text.values())

