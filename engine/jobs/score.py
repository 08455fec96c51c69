"""The ``score`` job: a reward model's scores of both responses of evaluation comparisons, and the automatic win
rate they give (config :class:`workbench.configs.ScoreConfig`).

What is scored (:func:`workbench.reward_scores.score_items`): the given comparison ids, else the comparisons of the
round ``round_id``, else of the newest round; each response once, with its conversation's prompt. The reward model
is loaded by PPO's loader for a reward model with its own weights (:class:`engine.trainers.ppo.rewards.SeparateScorer`: base
+ reward adapter + scalar head, or a full sequence-classification folder), so a response is encoded exactly as
the reward model saw its training pairs and as PPO scores rollouts. Responses go in batches of ``batch_size``
(similar lengths together, less padding); after each batch its scores are committed as metric rows of this run
(``step`` = response id, key ``reward``; :mod:`workbench.reward_scores`), so a cancelled run keeps what it scored.

Comparisons scored by id (pending ones too) also get their reward gap stored (metric ``gap``, ``step`` = the
comparison id): the annotation queue's "closest first" order serves the pairs the reward model is least sure about
first.

Responses by id (``response_ids``): scored one by one with their prompts; with ``safety_model`` the scorer is a
safety classifier loaded the same way with its label head (PPO's safety cost: the largest category probability),
stored as metric ``harm`` (:func:`workbench.safety_eval` turns those into the harmful-output rate).

The model folder is checked before anything is loaded or written: a missing folder, an adapter without a scalar
head (an SFT adapter, a safety classifier) where a reward model is asked for, or a model folder without a
classification head is an input error and the project gets no scores. Events: ``progress`` per batch; ``done``
with the summary (wins, losses, ties, win rate and its 95% Wilson interval, agreement with the expert's verdicts,
the reward model's name; for responses, how many were scored).
"""

from __future__ import annotations

import time
from pathlib import Path

from workbench.configs import ScoreConfig
from workbench.errors import WorkbenchError
from workbench.errors import InputError
from workbench.reward_scores import (
    HARM_KEY,
    SCORE_KEY,
    auto_result,
    check_reward_model,
    normal_path,
    response_rows,
    responses_to_score,
    reward_model_name,
    safety_model_problem,
    score_items,
    store_gaps,
    store_scores,
)

from . import JobError, JobResult
from .context import JobContext


def _base_of(folder: Path, cfg: ScoreConfig) -> str | None:
    """The base model the reward adapter runs on (None for a full classifier folder)."""
    from ..lora import adapter_base

    if (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        return None
    base = cfg.base_model or adapter_base(folder)
    if not base:
        raise JobError(f"reward_model {folder}: the adapter does not record its base model; set base_model")
    return base


def load_scorer(folder: Path, cfg: ScoreConfig, *, as_cost: bool = False):
    """PPO's separate reward scorer on ``folder`` (``as_cost``: a safety classifier's largest label probability);
    errors become a :class:`JobError` naming the folder."""
    from ..devices import resolve_device
    from ..model_errors import ModelError
    from ..trainers.ppo.rewards import SeparateScorer

    base = _base_of(folder, cfg)
    try:
        return SeparateScorer(folder, base=base, device=resolve_device(cfg.device), max_length=cfg.max_length,
                              batch_size=cfg.batch_size, as_cost=as_cost, trust_remote_code=cfg.trust_remote_code)
    except (ModelError, ValueError, FileNotFoundError, KeyError, RuntimeError, OSError) as e:
        what = "safety_model" if as_cost else "reward_model"
        raise JobError(f"{what} {folder}: cannot load it on {base or 'its own weights'} ({e})") from e


def _score_rows(ctx: JobContext, scorer, rows, key: str) -> tuple[dict[int, float], bool, float]:
    """Score (response id, messages, text) rows in batches, committing each batch's scores as metric ``key``;
    returns (scores, cancelled, seconds)."""
    cfg: ScoreConfig = ctx.config  # type: ignore[assignment]
    project = ctx.project()
    # Longest first, so similar lengths share a batch (less padding) and a memory problem shows at once.
    rows = sorted(rows, key=lambda r: -(len(r[2]) + sum(len(m.get("content", "")) for m in r[1])))
    total = len(rows)
    ctx.progress(0, total)
    scores: dict[int, float] = {}
    started = time.perf_counter()
    for i in range(0, total, cfg.batch_size):
        if ctx.should_stop():
            return scores, True, time.perf_counter() - started
        batch = rows[i : i + cfg.batch_size]
        values = scorer([m for _, m, _ in batch], [t for _, _, t in batch]).tolist()
        got = {rid: float(v) for (rid, _, _), v in zip(batch, values)}
        store_scores(project, ctx.run_id, got, key)
        scores.update(got)
        elapsed = time.perf_counter() - started
        done = len(scores)
        ctx.progress(done, total, responses_per_s=round(done / elapsed, 2) if elapsed > 0 else None,
                     eta_s=round(elapsed / done * (total - done), 1) if done else None)
    return scores, False, time.perf_counter() - started


def _score_responses(ctx: JobContext, cfg: ScoreConfig) -> JobResult:
    """Score responses by id with a reward model or a safety classifier."""
    project = ctx.project()
    safety = bool(cfg.safety_model)
    try:
        if safety:
            problem = safety_model_problem(cfg.safety_model)
            if problem:
                raise InputError(f"safety_model {cfg.safety_model}: {problem}")
            folder = Path(cfg.safety_model).expanduser()
        else:
            folder = check_reward_model(cfg.reward_model)
        rows = response_rows(project, cfg.response_ids)
    except WorkbenchError as e:
        raise JobError(str(e)) from e
    if not rows:
        raise JobError("response_ids: no responses to score")
    t0 = time.perf_counter()
    scorer = load_scorer(folder, cfg, as_cost=safety)
    load_s = time.perf_counter() - t0
    what = "safety classifier" if safety else "reward model"
    ctx.log(f"{what} {normal_path(folder)} loaded on {scorer.device} in {load_s:.1f}s; scoring {len(rows)} "
            "response(s)")
    key = HARM_KEY if safety else SCORE_KEY
    scores, cancelled, score_s = _score_rows(ctx, scorer, rows, key)
    final = {"score/responses": len(scores)}
    if scores:
        final[f"score/{key}_mean"] = sum(scores.values()) / len(scores)
    summary = {"responses": len(scores), "key": key, "model_path": normal_path(folder), "load_s": round(load_s, 2),
               "score_s": round(score_s, 2)}
    return JobResult(status="cancelled" if cancelled else "done", output=normal_path(folder), final_metrics=final,
                     summary=summary)


def run(ctx: JobContext) -> JobResult:
    cfg: ScoreConfig = ctx.config  # type: ignore[assignment]
    project = ctx.project()
    if project is None or ctx.run_id is None:
        raise JobError("scoring needs a project and a run to record the scores in")
    if cfg.response_ids or cfg.safety_model:
        return _score_responses(ctx, cfg)
    try:
        folder = check_reward_model(cfg.reward_model)
        rnd, items = score_items(project, round_id=cfg.round_id, comparison_ids=cfg.comparison_ids)
    except WorkbenchError as e:
        raise JobError(str(e)) from e
    what = f"round {rnd.id}" if rnd is not None else f"{len(items)} comparison(s)"
    if not items:
        raise JobError(f"{what} has no comparisons to score (queue its blind pairs first)")
    rows = responses_to_score(project, items)

    t0 = time.perf_counter()
    scorer = load_scorer(folder, cfg)
    load_s = time.perf_counter() - t0
    name = reward_model_name(folder, project)
    ctx.log(f"reward model {name} ({normal_path(folder)}) loaded on {scorer.device} in {load_s:.1f}s; scoring "
            f"{len(rows)} response(s) of {len(items)} comparison(s) of {what}")
    scores, cancelled, score_s = _score_rows(ctx, scorer, rows, SCORE_KEY)
    if rnd is None:
        gaps = store_gaps(project, ctx.run_id, items, scores)
        ctx.log(f"reward gaps stored for {gaps} comparison(s) (the queue's closest-first order)")

    res = auto_result(items, scores, reward_model=name)
    w = res.win
    final = {"score/wins": w.wins, "score/losses": w.losses, "score/ties": w.ties, "score/responses": len(scores)}
    if w.n:
        final.update({"score/win_rate": w.rate, "score/win_rate_low": w.low, "score/win_rate_high": w.high})
    if res.judged:
        final["score/agreement"] = res.agreement[0]
    first = rnd.model_a.name if rnd is not None else "response_a"
    second = rnd.model_b.name if rnd is not None else "response_b"
    if w.n:
        # Said from the second model's side, as the Evaluation page says it (the tuned model against its parent).
        ctx.log(f"by reward: {second} wins {w.losses}, loses {w.wins}, ties {w.ties} against {first}: win rate "
                f"{1 - w.rate:.1%} (95% CI {1 - w.high:.1%}–{1 - w.low:.1%})"
                + (f"; agrees with your verdict on {res.agree} of {res.judged} judged pair(s)" if res.judged else ""))
    summary = {**res.as_dict(), "round_id": rnd.id if rnd is not None else None, "model_a": first, "model_b": second,
               "reward_model_path": normal_path(folder), "responses": len(scores), "load_s": round(load_s, 2),
               "score_s": round(score_s, 2)}
    return JobResult(status="cancelled" if cancelled else "done", output=normal_path(folder), final_metrics=final,
                     summary=summary)
