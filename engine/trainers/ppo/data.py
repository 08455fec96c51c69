"""The prompts PPO samples from: those of a snapshot, or a new ``prompts`` snapshot of every training prompt.

Held-out prompts never enter: a ``prompts`` snapshot takes the train split only, and prompts of another snapshot
kind that are (now) held out are left out too. Functions take a :class:`workbench.store.Project`; they use only its
public API and SQL on its connection (no schema change: the ``prompt`` item type of ``snapshot_item`` exists).
"""

from __future__ import annotations

import json

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
    row = project.conn.execute("SELECT kind FROM snapshot WHERE id = ?", (snapshot_id,)).fetchone()
    if row is None:
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"no snapshot with id {snapshot_id}")
    messages = dict(prompt_cache(project, snapshot_id).messages)
    for pid, text in project.conn.execute(
        "SELECT p.id, p.messages FROM snapshot_item s JOIN prompt p ON p.id = s.item_id "
        "WHERE s.snapshot_id = ? AND s.item_type = 'prompt'", (snapshot_id,)
    ):
        messages[pid] = json.loads(text)
    heldout = set(project.prompt_ids(split="heldout"))
    return [(pid, messages[pid]) for pid in sorted(messages) if pid not in heldout]
