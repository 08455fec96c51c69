"""How a run is described to the expert, in the window's Runs and Train pages and on the command line: its
duration, its headline final metrics, how its config differs from another run's, and short forms of durations and
model references. Plain functions over the run records of :meth:`workbench.store.Project.runs`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

# Final metrics worth showing first, in this order (others follow, sorted).
HEADLINE_METRICS = ("eval/loss", "train/loss", "eval/accuracy", "eval/reward_mean", "train/tokens_per_s")
# What a run of each stage achieved, in one figure: the first of these final metrics the run has (held-out figures
# first), with the words a list shows beside it.
STAGE_HEADLINES: dict[str, tuple[tuple[str, str], ...]] = {
    "sft": (("eval/loss", "held-out loss"), ("train/loss", "loss")),
    "rm": (("eval/accuracy", "held-out pair accuracy"), ("train/accuracy", "pair accuracy")),
    "safety": (("eval/macro_accuracy", "held-out label accuracy"), ("eval/accuracy", "held-out label accuracy"),
               ("train/loss", "loss")),
    "dpo": (("eval/rewards/accuracy", "held-out preference accuracy"), ("rewards/accuracy", "preference accuracy")),
    "ppo": (("rollout/score_mean", "reward"), ("rollout/reward_mean", "reward")),
    "score": (("score/win_rate", "win rate of model A"),),
}


def fmt_duration(seconds: float | None) -> str:
    """``45s``, ``3m07s``, ``2h05m``; a dash for an unknown (None, NaN or negative) duration."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "–"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _parse_time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        return None


def run_duration(run: dict[str, Any]) -> float | None:
    """Seconds from start to finish (to now while running); None when it never started or the end is unknown."""
    start, end = _parse_time(run.get("started_at")), _parse_time(run.get("finished_at"))
    if start is None:
        return None
    if end is None:
        end = datetime.now(start.tzinfo) if run["status"] == "running" else None
    return (end - start).total_seconds() if end else None


def metrics_summary(final: dict[str, Any] | None, limit: int = 4) -> str:
    """The first ``limit`` final metrics, headline ones first: ``eval/loss 0.412 · train/loss 0.398``."""
    if not final:
        return ""
    keys = [k for k in HEADLINE_METRICS if k in final] + sorted(k for k in final if k not in HEADLINE_METRICS)
    parts = []
    for k in keys[:limit]:
        v = final[k]
        parts.append(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}")
    return " · ".join(parts)


def headline(run: dict[str, Any]) -> tuple[str, float] | None:
    """(words, value) of the figure that says what a finished run achieved (:data:`STAGE_HEADLINES`), or None."""
    final = run.get("final_metrics") or {}
    for key, words in STAGE_HEADLINES.get(run.get("stage", ""), ()):
        value = final.get(key)
        if isinstance(value, (int, float)) and value == value:
            return words, float(value)
    return None


def headline_text(run: dict[str, Any]) -> str:
    """``pair accuracy 0.81``; empty when the run has no headline figure."""
    h = headline(run)
    return f"{h[0]} {h[1]:.3g}" if h else ""


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Settings that differ between two run configs (a key missing on one side shows as None)."""
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def short_model(ref: str | None) -> str:
    """A model reference as a column shows it: the bundled model's name, a folder's last part, else the reference."""
    if not ref:
        return ""
    if ref.startswith("bundled:"):
        return ref.split(":", 1)[1]
    return Path(ref).name if ("/" in ref and Path(ref).exists()) else ref
