"""The project's finished runs offered wherever a model is asked for (a reward model, a safety classifier, an adapter
to start from, a reference, the model to evaluate or generate with), and the defaults taken when none is named.

Qt-free: the window's pickers list :func:`run_choices`; the command line and the Train page share
:func:`with_default_reward_model` (PPO without a reward model takes the newest finished reward-model run and says
which), so both take the same run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configs import ModelConfig
from .errors import InputError
from .eval_round import TUNED_STAGES
from .reward_scores import normal_path, reward_model_problem, safety_model_problem
from .run_report import headline_text
from .store import Project
from .train_checks import STAGES, done_runs

# What each kind of model a setting asks for is trained by.
ROLE_STAGES: dict[str, tuple[str, ...]] = {
    "reward_model": ("rm",),
    "safety_model": ("safety",),
    "adapter": TUNED_STAGES,
}
# The config fields that name a model folder, and the kind of run each takes.
FIELD_ROLES = {"reward_model": "reward_model", "safety_model": "safety_model", "adapter_from": "adapter",
               "reference_adapter": "adapter"}


@dataclass(frozen=True)
class RunChoice:
    """A finished run whose output a setting can name: ``folder`` is what goes into the config."""

    run_id: int
    stage: str
    name: str
    folder: str
    finished_at: str
    base_model: str | None
    headline: str

    @property
    def short_label(self) -> str:
        """``run 7 · Reward model · night shift``"""
        return " · ".join([f"run {self.run_id}", STAGES.get(self.stage, self.stage), *([self.name] if self.name else [])])

    @property
    def label(self) -> str:
        """``run 7 · Reward model · night shift · 2024-05-01 12:00 · pair accuracy 0.81``"""
        parts = [self.short_label]
        if self.finished_at:
            parts.append(self.finished_at[:16].replace("T", " "))
        if self.headline:
            parts.append(self.headline)
        return " · ".join(parts)


def _usable(role: str, folder: str) -> bool:
    if role == "reward_model":
        return reward_model_problem(folder) is None
    if role == "safety_model":
        return safety_model_problem(folder) is None
    return (Path(folder) / "adapter_config.json").is_file()


def run_choice(run: dict[str, Any]) -> RunChoice:
    """The choice of one finished run (a record of :func:`workbench.train_checks.done_runs`)."""
    return RunChoice(int(run["id"]), run["stage"], run.get("name") or "", str(run["adapter"]),
                     run.get("finished_at") or run.get("created_at") or "", run.get("base_model"), headline_text(run))


def run_choices(project: Project, role: str) -> list[RunChoice]:
    """The finished runs whose output serves as ``role`` (reward_model, safety_model or adapter), newest first;
    only those whose folder is on disk and holds what the role needs."""
    stages = ROLE_STAGES[role]
    out = []
    for run in sorted((r for s in stages for r in done_runs(project, s)), key=lambda r: -r["id"]):
        if _usable(role, str(run["adapter"])):
            out.append(run_choice(run))
    return out


def newest_choice(project: Project, role: str) -> RunChoice | None:
    choices = run_choices(project, role)
    return choices[0] if choices else None


def choice_for_folder(project: Project, folder: str | None, role: str | None = None) -> RunChoice | None:
    """The run (of ``role``, when given) whose output is ``folder``, or None for a folder no finished run made."""
    if not folder:
        return None
    norm = normal_path(folder)
    roles = [role] if role else list(ROLE_STAGES)
    for r in roles:
        for choice in run_choices(project, r):
            if normal_path(choice.folder) == norm:
                return choice
    return None


def with_default_reward_model(project: Project, config: ModelConfig) -> tuple[ModelConfig, str | None]:
    """A PPO config with a reward model: the one it names, else the newest finished reward-model run's (the note
    says which, for the caller to show). Without either, an :class:`InputError` before any run is made."""
    if not hasattr(config, "reward_model") or config.reward_model:
        return config, None
    choice = newest_choice(project, "reward_model")
    if choice is None:
        raise InputError("PPO needs a reward model and the project has no finished reward-model run: train one "
                         "(stage Reward model, `workbench train rm`) or name one (reward_model, --reward-model)",
                         field="reward_model")
    cfg = dataclasses.replace(config, reward_model=choice.folder)
    return cfg, f"reward model: {choice.label} (the newest finished reward-model run)"


def describe_folder(project: Project, folder: str | None) -> str:
    """How a list names a model folder: its run's label, else the folder's last two parts."""
    choice = choice_for_folder(project, folder)
    if choice is not None:
        return choice.label
    if not folder:
        return ""
    p = Path(folder)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name

