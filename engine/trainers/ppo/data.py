"""The prompts PPO samples from: those of a snapshot, or a new ``prompts`` snapshot of every training prompt.

Held-out prompts never enter: a ``prompts`` snapshot takes the train split only, and prompts of another snapshot
kind that are (now) held out are left out too. Functions take a :class:`workbench.store.Project` and use only its
public API (no schema change: the ``prompt`` item type of ``snapshot_item`` exists).
"""

from __future__ import annotations

from workbench.store import Project
from workbench.training_data import prompt_cache

SNAPSHOT_KIND = "prompts"


def prompts_snapshot(project: Project, *, note: str = "") -> int:
    """Freeze every training-split prompt as a snapshot of kind ``prompts``."""
    ids = project.prompt_ids(split="train")
    return project.create_snapshot(SNAPSHOT_KIND, {"prompt": ids}, options={"split": "train"}, note=note)


def snapshot_prompts(project: Project, snapshot_id: int) -> list[tuple[int, list[dict[str, str]]]]:
    """(prompt id, messages) of every training-split prompt a snapshot refers to, in id order: its ``prompt`` items
    and the prompts of its comparisons, rankings and demonstrations."""
    if project.get_snapshot(snapshot_id) is None:
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"no snapshot with id {snapshot_id}")
    messages = prompt_cache(project, snapshot_id, with_prompt_items=True).messages
    heldout = set(project.prompt_ids(split="heldout"))
    return [(pid, messages[pid]) for pid in sorted(messages) if pid not in heldout]
