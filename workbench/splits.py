"""Which prompts are held out: held-out prompts never enter a training snapshot; blind evaluation rounds and the
harmful-output rate use them. Qt-free: the window's held-out prompts dialog calls these.

A prompt a training run has already used (its snapshot refers to it) is never moved silently: holding it out now
would make an evaluation on it look better than it is, since the model saw it. :func:`hold_out` leaves such prompts
in training unless ``include_trained`` is given, and its report says how many were left (or moved anyway).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InputError
from .store import Project


@dataclass(frozen=True)
class SplitChange:
    """What a change of split did: ``moved`` prompts changed split; ``trained`` of those asked were used by a
    training run (left where they were, or moved anyway when ``moved_trained``)."""

    moved: int
    trained: int = 0
    moved_trained: bool = False

    def text(self, to: str = "held out") -> str:
        out = f"{self.moved} prompt(s) now {to}"
        if self.trained:
            out += (f"; {self.trained} of them were already used by a training run (an evaluation on them is "
                    "optimistic)" if self.moved_trained else
                    f"; {self.trained} left in training because a training run already used them")
        return out


def hold_out(project: Project, prompt_ids: Sequence[int], *, include_trained: bool = False) -> SplitChange:
    """Mark these prompts held out (see the module docstring for prompts a run already trained on)."""
    ids = [int(i) for i in prompt_ids]
    trained = project.prompts_in_training_snapshots(ids)
    move = ids if include_trained else [i for i in ids if i not in trained]
    return SplitChange(project.set_splits(move, "heldout"), len(trained), include_trained)


def back_to_training(project: Project, prompt_ids: Sequence[int]) -> SplitChange:
    """Return held-out prompts to the training split."""
    return SplitChange(project.set_splits(prompt_ids, "train"))


def hold_out_share(project: Project, share: float, *, seed: int = 0, include_trained: bool = False) -> SplitChange:
    """Hold out a random ``share`` (0 to 1) of the training prompts, drawn with ``seed`` (the same seed on the same
    project draws the same prompts). Prompts a training run used are not drawn unless ``include_trained``."""
    if not 0 < share <= 1:
        raise InputError(f"the share must be above 0 and at most 1, not {share}", field="share")
    train = project.prompt_ids(split="train")
    trained = project.prompts_in_training_snapshots(train)
    pool = train if include_trained else [i for i in train if i not in trained]
    n = round(len(train) * share)
    picked = sorted(random.Random(seed).sample(pool, min(n, len(pool))))
    in_picked = sum(1 for i in picked if i in trained)
    moved = project.set_splits(picked, "heldout")
    return SplitChange(moved, in_picked if include_trained else len(trained), include_trained)
