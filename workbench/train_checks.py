"""What the Train page checks before it starts a run, and the data counts it shows.

The engine checks again when it runs (it freezes the snapshot and refuses too little data); these checks exist so
the expert hears about a missing reward model or an empty data set before a worker loads a model for a minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configs import ModelConfig
from .model_files import model_refusal
from .paths import BUNDLED_MODEL_REF
from .store import Project
from .training_data import preference_selection

STAGES: dict[str, str] = {
    "sft": "Supervised fine-tuning (SFT)",
    "rm": "Reward model",
    "safety": "Safety classifier",
    "ppo": "PPO",
    "dpo": "DPO",
}
# The snapshot kind each stage trains on (what "an existing snapshot" lists).
SNAPSHOT_KIND = {"sft": "sft", "rm": "preference", "dpo": "preference", "safety": "safety", "ppo": "preference"}
# What the stage's examples are called, for messages.
UNIT = {"sft": "demonstration(s)", "rm": "judged pair(s)", "dpo": "judged pair(s)", "safety": "safety label(s)",
        "ppo": "training prompt(s)"}


@dataclass
class Problem:
    level: str        # error (blocks the start) | warning
    message: str
    field: str | None = None


def data_counts(project: Project) -> dict[str, int]:
    """What a new snapshot would hold now, per kind of training data (training split only, no eval items), and
    the project's counts they are part of (``judged``, ``all_rankings``, ``all_demonstrations``: the numbers the
    status bar and Overview show, from :meth:`Project.stats`)."""
    items, _ = preference_selection(project)
    labels = project.live_label_counts("train")
    stats = project.stats()
    return {
        "judged": stats["judged"],
        "all_rankings": stats["rankings"],
        "all_demonstrations": stats["demonstrations"],
        "demonstrations": labels["demonstrations"],
        "pairs": len(items["comparison"]),
        "rankings": len(items["ranking"]),
        "safety_labels": labels["safety_labels"],
        "train_prompts": project.prompt_count("train"),
        "heldout_prompts": project.prompt_count("heldout"),
    }


def stage_count(stage: str, counts: dict[str, int]) -> int:
    """How many training examples of the stage's kind the counts give (rankings count once, as a lower bound)."""
    return {
        "sft": counts["demonstrations"],
        "rm": counts["pairs"] + counts["rankings"],
        "dpo": counts["pairs"] + counts["rankings"],
        "safety": counts["safety_labels"],
        "ppo": counts["train_prompts"],
    }[stage]


def snapshot_size(project: Project, snapshot_id: int) -> dict[str, int]:
    """How many items of each type a snapshot holds."""
    return project.snapshot_sizes(snapshot_id)


def _model_problem(ref: str, what: str, field: str) -> Problem | None:
    if not ref or ref == BUNDLED_MODEL_REF or ref.startswith("bundled:"):
        return None
    p = Path(ref).expanduser()
    looks_like_path = ref.startswith(("/", ".", "~")) or ref.endswith(".gguf") or p.exists()
    if not looks_like_path:
        return None  # a hub id: the engine looks it up in the local cache
    if not p.exists():
        return Problem("error", f"{what}: {ref} does not exist", field)
    if p.is_dir() and not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
        return Problem("error", f"{what}: {ref} is a folder without config.json (not a model)", field)
    return None


def preflight(project: Project, stage: str, config: ModelConfig, *, counts: dict[str, int] | None = None) -> list[Problem]:
    """Problems that should stop (error) or be confirmed (warning) before starting ``stage`` with ``config``
    (``counts``: :func:`data_counts` already read, so a check while typing does not re-count a big project)."""
    problems: list[Problem] = []
    min_examples = int(getattr(config, "min_examples", 1) or 1)
    sid = getattr(config, "snapshot_id", None)
    if sid is not None:
        if project.get_snapshot(sid) is None:
            problems.append(Problem("error", f"snapshot {sid} does not exist", "snapshot_id"))
        else:
            size = snapshot_size(project, sid)
            n = {"sft": size.get("demonstration", 0) + size.get("comparison", 0),
                 "safety": size.get("flag", 0)}.get(stage, size.get("comparison", 0) + size.get("ranking", 0))
            if stage != "ppo" and n < min_examples:
                problems.append(Problem("error", f"snapshot {sid} holds {n} {UNIT[stage]}; this run needs at least "
                                        f"{min_examples}", "snapshot_id"))
    else:
        n = stage_count(stage, counts if counts is not None else data_counts(project))
        if n < min_examples:
            hint = {"sft": "write demonstrations on the Write page", "rm": "judge more comparisons",
                    "dpo": "judge more comparisons", "safety": "flag more responses",
                    "ppo": "import or add prompts"}[stage]
            problems.append(Problem("error", f"too little data: the project has {n} {UNIT[stage]} for this stage; "
                                    f"the run needs at least {min_examples} ({hint})", "min_examples"))
        elif n < 4 * min_examples:
            problems.append(Problem("warning", f"only {n} {UNIT[stage]}: the run will mostly show noise"))
    p = _model_problem(config.base_model, "base model", "base_model")
    if p:
        problems.append(p)
    else:
        refusal = model_refusal(config.base_model)
        if refusal:
            problems.append(Problem("error", f"base model: {refusal}", "base_model"))
    if config.adapter_from:
        p = _model_problem(config.adapter_from, "starting adapter", "adapter_from")
        if p:
            problems.append(p)
    if stage == "ppo":
        rm = getattr(config, "reward_model", None)
        if not rm:
            from .run_choices import newest_choice  # (run_choices builds on this module)

            if newest_choice(project, "reward_model") is None:
                problems.append(Problem("error", "PPO needs a reward model and the project has no finished "
                                        "reward-model run: train one (stage Reward model) first, or pick a folder",
                                        "reward_model"))
        else:
            p = _model_problem(rm, "reward model", "reward_model")
            if p:
                problems.append(p)
    return problems


def done_runs(project: Project, stage: str | None = None) -> list[dict[str, Any]]:
    """Finished runs with an output folder (adapters to start from, reward models for PPO)."""
    out = []
    for r in project.runs():
        if r["status"] != "done" or (stage and r["stage"] != stage):
            continue
        output = (r.get("final_metrics") or {}).get("output") or _adapter_dir(r)
        if output:
            out.append({**r, "adapter": output})
    return out


def _adapter_dir(run: dict[str, Any]) -> str | None:
    d = run.get("output_dir")
    if not d:
        return None
    adapter = Path(d) / "adapter"
    return str(adapter) if adapter.is_dir() else None
