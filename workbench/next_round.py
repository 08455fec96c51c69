"""The next round of the loop: candidates from the newest tuned model for training prompts with nothing pending,
queued as pairs for the Compare page.

:func:`next_round_config` chooses the model (the newest finished SFT, DPO or PPO run, as the blind evaluation
round's model B; the base model when no run is tuned yet) and the prompts (training prompts without a pending
comparison, taken in id order from where the previous next round stopped, wrapping around, so successive rounds
cover the whole set), and returns the ``generate`` job's config. The command line (``workbench generate PROJECT
--next-round``) and the Overview page run that config as any generate job, through the same job client, so both
queue the same round. Qt-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .configs import GenerateConfig
from .errors import InputError
from .eval_round import newest_tuned_run, tuned_label
from .paths import BUNDLED_MODEL_REF
from .store import Project

DEFAULT_LIMIT = 16
CURSOR_SETTING = "next_round.after_prompt"
COUNT_SETTING = "next_round.count"
# What a next round decides itself, whatever settings the caller passes along.
_CHOSEN_HERE = frozenset({"base_model", "adapter_from", "prompt_ids", "snapshot_id", "split", "tag",
                          "queue_comparisons", "compare_with_existing"})


@dataclass
class NextRound:
    """What a next round generates: the job's config and a sentence saying from which model, for which prompts."""

    config: GenerateConfig
    model: str
    prompt_ids: list[int]

    @property
    def description(self) -> str:
        return (f"next round: {self.config.n_per_prompt} candidates each for {len(self.prompt_ids)} training "
                f"prompt(s) with nothing pending, from {self.model}")


def round_prompts(project: Project, limit: int) -> list[int]:
    """Up to ``limit`` training prompts with no pending comparison, after the previous round's last one (wrapping
    around to the first)."""
    after = int(project.meta(CURSOR_SETTING) or 0)
    ids = project.prompts_without_pending(after_id=after, limit=limit)
    if len(ids) < limit and after:
        ids += [i for i in project.prompts_without_pending(limit=limit - len(ids)) if i not in ids and i <= after]
    return ids


def next_round_config(
    project: Project,
    *,
    limit: int | None = None,
    base_model: str | None = None,
    adapter: str | None = None,
    **settings: Any,
) -> NextRound:
    """The generate config of the next round (see the module docstring); ``base_model``/``adapter`` name another
    model, ``settings`` are further :class:`GenerateConfig` fields (sampling, device). Raises an
    :class:`InputError` when every training prompt already has pending pairs."""
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if limit < 1:
        raise InputError(f"must be at least 1, not {limit}", field="limit")
    if base_model is None and adapter is None:
        tuned = newest_tuned_run(project)
        if tuned is not None:
            base_model, adapter, model = tuned["base_model"] or BUNDLED_MODEL_REF, tuned["adapter"], tuned_label(tuned)
        else:
            base_model, model = BUNDLED_MODEL_REF, f"{BUNDLED_MODEL_REF} (no tuned run yet: the base model)"
    else:
        base_model = base_model or BUNDLED_MODEL_REF
        model = base_model + (f" + {adapter}" if adapter else "")
    ids = round_prompts(project, limit)
    if not ids:
        raise InputError("every training prompt already has pairs waiting on the Compare page: judge those first, "
                         "or add prompts", field="prompt_ids")
    number = int(project.meta(COUNT_SETTING) or 0) + 1
    fields: dict[str, Any] = dict(n_per_prompt=2, seed=1000 + number, name=f"next round {number}")
    fields.update({k: v for k, v in settings.items() if v is not None and k not in _CHOSEN_HERE})
    cfg = GenerateConfig(base_model=base_model, adapter_from=adapter, prompt_ids=ids, split="train",
                         queue_comparisons=True, compare_with_existing=False, **fields)
    cfg.validate()
    return NextRound(cfg, model, ids)


def record_round(project: Project, round_: NextRound) -> None:
    """Remember where this round stopped, so the next one takes the following prompts."""
    project.set_meta(CURSOR_SETTING, str(max(round_.prompt_ids)))
    project.set_meta(COUNT_SETTING, str(int(project.meta(COUNT_SETTING) or 0) + 1))
