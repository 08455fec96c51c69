"""Reward-model scores of evaluation responses and the automatic win rate they give, Qt-free and torch-free.

**Where scores live.** A ``score`` run (``engine/jobs/score.py``) scores responses with one reward model and stores
each score as a row of the ``metric`` table of that run: ``step`` = the response id, ``key`` = :data:`SCORE_KEY`.
The run row's config names the reward model folder (``reward_model``) and the round; so the scores need no table
of their own, a deleted run takes its scores with it, and the provenance of every score is the run that made it.
:func:`stored_scores` reads them back for one reward model (the newest run wins when a response was scored twice).

**Automatic win rate.** For each comparison of a round, the response of model A and that of model B are scored with
the conversation's prompt; the higher reward wins (equal rewards: a tie), and :func:`workbench.evaluation.
auto_win_rate` turns those outcomes into a win rate with its Wilson 95% interval, exactly as the human verdicts are
counted. Comparisons the expert has judged also give the reward model's agreement with the expert.

**Which folders are reward models.** A reward-model run's output (a LoRA adapter folder with ``head.safetensors``
whose head has one output; :func:`reward_model_problem` reads the head's safetensors metadata without torch), or a
full sequence-classification model folder (``config.json`` naming a ``…ForSequenceClassification`` architecture
with one label).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, WorkbenchError
from .evaluation import EvalRound, WinRate, _belongs_to, auto_win_rate, get_round, proportion, rounds
from .store import Project
from .train_checks import STAGES

SCORE_STAGE = "score"
SCORE_KEY = "reward"
# Per comparison scored (``step`` = its id): the absolute difference of its two responses' rewards. The queue's
# "closest first" order serves pending pairs by it (the reward model is least sure which is better).
GAP_KEY = "gap"
# Per response scored by a safety classifier (``step`` = its id): its largest category probability.
HARM_KEY = "harm"
HEAD_FILE = "head.safetensors"
# A run whose scores count: finished, or cancelled part-way (its finished batches were committed).
_USABLE = ("done", "cancelled")


# ---------------------------------------------------------------------------------------------- the reward model
def _head_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (an 8-byte little-endian header length, then a JSON header)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file too short")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ValueError("header too large")
        header = json.loads(f.read(n))
    return dict(header.get("__metadata__") or {})


def reward_model_problem(path: str | os.PathLike[str] | None) -> str | None:
    """Why ``path`` is not a reward model this app can score with, or None when it is one."""
    if not path or not str(path).strip():
        return "no reward model chosen"
    folder = Path(path).expanduser()
    if not folder.exists():
        return "no such folder"
    if not folder.is_dir():
        return "not a folder"
    config = folder / "config.json"
    if (folder / "adapter_config.json").is_file():
        if not (folder / HEAD_FILE).is_file():
            return (f"the adapter has no {HEAD_FILE}, so it is not a reward model (pick the output folder of a "
                    "reward-model run)")
        try:
            meta = _head_metadata(folder / HEAD_FILE)
        except (OSError, ValueError, struct.error) as e:
            return f"{HEAD_FILE} cannot be read ({e})"
        out = int(meta.get("out_features", "1") or 1)
        kind = meta.get("kind", "")
        if out != 1 or (kind and kind != "reward"):
            return (f"its head is a {kind or 'multi-output'} head with {out} output(s), not a reward model's single "
                    "score (a safety classifier?)")
        if not (folder / "adapter_model.safetensors").is_file():
            return "the adapter folder has no adapter_model.safetensors"
        return None
    if config.is_file():
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return f"config.json cannot be read ({e})"
        archs = cfg.get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in archs):
            return (f"a model folder ({', '.join(archs) or 'unknown architecture'}), not a reward model: no scalar "
                    "head (pick a reward-model run's output folder)")
        labels = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 1
        if int(labels) != 1:
            return f"a classifier with {labels} labels, not a reward model's single score"
        return None
    return "not a reward model folder (no adapter_config.json with head.safetensors, no config.json)"


def safety_model_problem(path: str | os.PathLike[str] | None) -> str | None:
    """Why ``path`` is not a safety classifier this app can score with (a safety run's adapter with its label head,
    or a sequence-classification model folder), or None when it is one."""
    if not path or not str(path).strip():
        return "no safety classifier chosen"
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return "no such folder" if not folder.exists() else "not a folder"
    if (folder / "adapter_config.json").is_file():
        if not (folder / HEAD_FILE).is_file():
            return f"the adapter has no {HEAD_FILE}, so it is not a safety classifier (pick a safety run's output folder)"
        try:
            meta = _head_metadata(folder / HEAD_FILE)
        except (OSError, ValueError, struct.error) as e:
            return f"{HEAD_FILE} cannot be read ({e})"
        if meta.get("kind", "") not in ("safety", ""):
            return f"its head is a {meta['kind']} head, not a safety classifier's labels (a reward model?)"
        return None
    config = folder / "config.json"
    if config.is_file():
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            return f"config.json cannot be read ({e})"
        if not any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
            return "a model folder without a classification head, not a safety classifier"
        return None
    return "not a safety classifier folder (no adapter_config.json with head.safetensors, no config.json)"


def check_reward_model(path: str | os.PathLike[str] | None, *, field: str = "reward_model") -> Path:
    """The reward model folder, or an :class:`InputError` naming the setting and the folder and saying what is
    wrong (``reward_model /some/folder: no such folder``)."""
    problem = reward_model_problem(path)
    if problem:
        raise InputError(f"{field} {path or ''}".rstrip() + f": {problem}")
    return Path(str(path)).expanduser()


def normal_path(path: str | os.PathLike[str]) -> str:
    """The form a reward model's folder is recorded and looked up in (absolute, no ``..``)."""
    return str(Path(path).expanduser().resolve())


def reward_model_name(path: str | os.PathLike[str], project: Project | None = None) -> str:
    """A short name for a reward model: ``run 7 · Reward model · NAME`` for a run's output (as the pickers call it),
    else ``parent/folder``."""
    norm = normal_path(path)
    if project is not None:
        for run in project.runs_of_stage("rm"):
            out = run["output_dir"]
            if out and (normal_path(Path(out) / "adapter") == norm or normal_path(out) == norm):
                return f"run {run['id']} · {STAGES['rm']}" + (f" · {run['name']}" if run["name"] else "")
    p = Path(norm)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


# ---------------------------------------------------------------------------------------------- what to score
@dataclass(frozen=True)
class ScoreItem:
    """One comparison to judge by reward: ``first`` is model A's response (in a round) or ``response_a``."""

    comparison_id: int
    prompt_id: int
    first: int
    second: int
    verdict: str | None  # the expert's verdict seen from ``first``: first | second | tie | None (pending)


def _oriented(verdict: str | None, a_is_first: bool) -> str | None:
    if verdict is None:
        return None
    if verdict in ("tie", "both_bad"):
        return "tie"
    return "first" if (verdict == "a") == a_is_first else "second"


def round_items(project: Project, rnd: EvalRound) -> list[ScoreItem]:
    """The round's comparisons (the same ones its human win rate counts), model A's response first."""
    items = []
    for cid, pid, ra, rb, verdict in project.eval_items(rnd.source):
        a_is_first = _belongs_to(project, ra, rnd.model_a)
        first, second = (ra, rb) if a_is_first else (rb, ra)
        items.append(ScoreItem(int(cid), int(pid), int(first), int(second), _oriented(verdict, a_is_first)))
    return items


def _all_found(ids: Sequence[int], lookup: Any, field: str, what: str) -> tuple[list[int], dict[int, Any]]:
    """(the ids once each, id → row) from ``lookup``; an unknown id is an :class:`InputError` naming ``field``."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    found = lookup(ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise InputError(f"{field}: no {what} with id {', '.join(map(str, missing[:5]))}"
                         + (" …" if len(missing) > 5 else ""))
    return ids, found


def comparison_items(project: Project, comparison_ids: Sequence[int]) -> list[ScoreItem]:
    ids, found = _all_found(comparison_ids, project.comparisons_by_id, "comparison_ids", "comparison")
    return [ScoreItem(i, found[i].prompt_id, found[i].response_a, found[i].response_b, _oriented(found[i].verdict, True))
            for i in ids]


def score_items(project: Project, *, round_id: int | None = None,
                comparison_ids: Sequence[int] = ()) -> tuple[EvalRound | None, list[ScoreItem]]:
    """What a score job scores: the given comparisons, else the round ``round_id``, else the newest round."""
    if comparison_ids:
        return None, comparison_items(project, comparison_ids)
    if round_id is None:
        all_rounds = rounds(project)
        if not all_rounds:
            raise InputError("round_id: the project has no evaluation round to score (run a blind round first)")
        rnd = all_rounds[-1]
    else:
        try:
            rnd = get_round(project, round_id)
        except WorkbenchError as e:
            raise InputError(f"round_id: {e}") from None
    return rnd, round_items(project, rnd)


def responses_to_score(project: Project, items: Iterable[ScoreItem]) -> list[tuple[int, list[dict[str, str]], str]]:
    """(response id, the conversation's prompt messages, response text), each response once."""
    out = []
    seen: set[int] = set()
    for it in items:
        for rid in (it.first, it.second):
            if rid in seen:
                continue
            seen.add(rid)
            r = project.get_response(rid)
            out.append((rid, project.get_prompt(r.prompt_id).messages, r.content))
    return out


def response_rows(project: Project, response_ids: Sequence[int]) -> list[tuple[int, list[dict[str, str]], str]]:
    """(response id, the conversation's prompt messages, response text) of the given responses; an unknown id is an
    :class:`InputError` naming it."""
    ids, found = _all_found(response_ids, project.responses_by_id, "response_ids", "response")
    return [(i, project.get_prompt(found[i].prompt_id).messages, found[i].content) for i in ids]


# ---------------------------------------------------------------------------------------------- storing, reading
def store_scores(project: Project, run_id: int, scores: Mapping[int, float], key: str = SCORE_KEY) -> None:
    """Record scores (response id → value) as metric rows ``key`` of a score run, in one transaction."""
    with project.transaction():
        for rid, value in scores.items():
            project.log_metrics(run_id, int(rid), {key: float(value)})


def store_gaps(project: Project, run_id: int, items: Iterable[ScoreItem], scores: Mapping[int, float]) -> int:
    """Record, for every item whose two responses are scored, the absolute reward gap (metric ``gap``, ``step`` =
    the comparison id) in one transaction; returns how many."""
    gaps = {it.comparison_id: abs(scores[it.first] - scores[it.second]) for it in items
            if it.first in scores and it.second in scores}
    with project.transaction():
        for cid, gap in gaps.items():
            project.log_metrics(run_id, cid, {GAP_KEY: gap})
    return len(gaps)


def run_scores(project: Project, run_id: int, key: str) -> dict[int, float]:
    """Response (or comparison) id → value of metric ``key`` of one score run."""
    return {int(step): float(v) for step, v in project.metric_values(run_id, key) if v is not None}


def score_runs(project: Project, reward_model: str | os.PathLike[str]) -> list[int]:
    """Ids of the usable score runs of this reward model, oldest first."""
    norm = normal_path(reward_model)
    out = []
    for run in project.runs_of_stage(SCORE_STAGE, statuses=_USABLE):
        spec = (run["config"] or {}).get("reward_model")
        if spec and normal_path(spec) == norm:
            out.append(int(run["id"]))
    return out


def stored_scores(project: Project, reward_model: str | os.PathLike[str]) -> dict[int, float]:
    """Response id → reward from this reward model's score runs (a later run's score replaces an earlier one)."""
    out: dict[int, float] = {}
    for run_id in score_runs(project, reward_model):
        for step, value in project.metric_values(run_id, SCORE_KEY):
            if value is not None:
                out[int(step)] = float(value)
    return out


@dataclass(frozen=True)
class ScoreGap:
    """How far apart one reward model scores two responses (a small gap: an informative item to judge)."""

    gap: float             # |reward(first) - reward(second)|
    reward_model: str      # the reward model's short name (:func:`reward_model_name`)


def score_gap(project: Project, first: int, second: int) -> ScoreGap | None:
    """The gap between the stored scores of two responses by the reward model that scored most recently and scored
    both (a later score run of a model replaces an earlier one's score); None when no reward model scored both."""
    by_model: dict[str, dict[int, float]] = {}
    for run in project.runs_of_stage(SCORE_STAGE, statuses=_USABLE, newest_first=True):
        spec = (run["config"] or {}).get("reward_model")
        if not spec:
            continue
        scores = by_model.setdefault(normal_path(spec), {})
        for rid, value in project.metric_at_steps(int(run["id"]), SCORE_KEY, [first, second]).items():
            scores.setdefault(rid, value)  # newest run first: its score stands
    for model, scores in by_model.items():
        if first in scores and second in scores:
            return ScoreGap(abs(scores[first] - scores[second]), reward_model_name(model, project))
    return None


# ---------------------------------------------------------------------------------------------- the win rate
@dataclass
class AutoResult:
    """Model A's (``first``'s) win rate by reward, and the reward model's agreement with the expert."""

    win: WinRate
    scored: int                 # comparisons with both responses scored
    unscored: int
    agree: int = 0              # judged, non-tied comparisons where the higher reward went to the expert's choice
    judged: int = 0
    reward_model: str = ""

    @property
    def agreement(self) -> tuple[float, float, float]:
        """(rate, Wilson 95% low, high) of agreement with the expert's verdicts."""
        return proportion(self.agree, self.judged)

    def as_dict(self) -> dict[str, Any]:
        rate, low, high = self.agreement
        return {"wins": self.win.wins, "losses": self.win.losses, "ties": self.win.ties, "n": self.win.n,
                "win_rate": self.win.rate, "win_rate_low": self.win.low, "win_rate_high": self.win.high,
                "scored": self.scored, "unscored": self.unscored, "agree": self.agree, "judged": self.judged,
                "agreement": rate, "agreement_low": low, "agreement_high": high, "reward_model": self.reward_model}


def auto_result(items: Sequence[ScoreItem], scores: Mapping[int, float], *, reward_model: str = "",
                tie_eps: float = 1e-6) -> AutoResult:
    """Count wins by reward over ``items`` (those with both responses scored)."""
    first = {it.comparison_id: scores[it.first] for it in items if it.first in scores and it.second in scores}
    second = {it.comparison_id: scores[it.second] for it in items if it.comparison_id in first}
    win = auto_win_rate(first, second, tie_eps=tie_eps)
    agree = judged = 0
    for it in items:
        if it.comparison_id not in first or it.verdict not in ("first", "second"):
            continue
        d = first[it.comparison_id] - second[it.comparison_id]
        if abs(d) <= tie_eps:
            continue
        judged += 1
        agree += (d > 0) == (it.verdict == "first")
    return AutoResult(win, len(first), len(items) - len(first), agree, judged, reward_model)


def auto_round_result(project: Project, rnd: EvalRound, reward_model: str | os.PathLike[str]) -> AutoResult:
    """The automatic win rate of a round's model A by the stored scores of ``reward_model``."""
    return auto_result(round_items(project, rnd), stored_scores(project, reward_model),
                       reward_model=reward_model_name(reward_model, project))
