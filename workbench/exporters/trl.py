"""Rows in the column layouts TRL 1.x trainers read, all in TRL's *conversational* form (messages, not text):

- ``trl-preference`` (DPOTrainer, RewardTrainer): ``prompt`` (the conversation so far), ``chosen`` and ``rejected``
  (each a one-message list ``[{"role": "assistant", "content": ...}]``) and ``margin`` (a float from the judgment's
  strength; RewardTrainer subtracts it inside the Bradley–Terry loss when the column is present). When ties or
  both-bad verdicts are asked for, two bool columns ``tie`` and ``both_bad`` are added; such rows carry response A
  as ``chosen``, response B as ``rejected`` and margin 0, and a trainer must filter or weight them itself (plain
  DPO would read them as preferences).
- ``trl-sft`` (SFTTrainer, prompt-completion type): ``prompt`` and ``completion`` (one assistant message).
- ``trl-kto`` (KTOTrainer, unpaired preference type): ``prompt``, ``completion`` and ``label`` (bool: desirable).

Which rows qualify is decided in ``workbench.training_data``; this module only lays them out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from json.encoder import encode_basestring as _string  # C-accelerated, ensure_ascii=False
from typing import Any

from .. import training_data as td
from ..store import Project


def _assistant(content: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": content}]


def _messages_feature(datasets: Any) -> Any:
    return datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})


def _preference_items(
    project: Project, snapshot_id: int, *, include_both_bad: bool, left_out: Counter[str]
) -> Iterator[tuple[int, str, str, float, bool, bool]]:
    """(prompt id, chosen, rejected, margin, tie, both_bad) for every row the export writes."""
    both_bad: list[tuple[int, int, str, str]] = []
    for pid, chosen, rejected, margin, _strength, tie, *_ids in td.iter_preference_rows(project, snapshot_id, both_bad=both_bad):
        yield pid, chosen, rejected, margin, tie, False
    if both_bad and not include_both_bad:
        left_out["both bad: no preferred response"] += len(both_bad)
    elif both_bad:
        for _cid, pid, ca, cb in both_bad:
            yield pid, ca, cb, 0.0, False, True


def preference_rows(
    project: Project, snapshot_id: int, *, with_flags: bool, include_both_bad: bool, left_out: Counter[str]
) -> Iterator[dict[str, Any]]:
    prompts = td.prompt_cache(project, snapshot_id).messages
    for pid, chosen, rejected, margin, tie, both_bad in _preference_items(
        project, snapshot_id, include_both_bad=include_both_bad, left_out=left_out
    ):
        row = {"prompt": prompts[pid], "chosen": _assistant(chosen), "rejected": _assistant(rejected), "margin": margin}
        if with_flags:
            row["tie"] = tie
            row["both_bad"] = both_bad
        yield row


def preference_lines(
    project: Project, snapshot_id: int, *, with_flags: bool, include_both_bad: bool, left_out: Counter[str]
) -> Iterator[str]:
    """The same rows as :func:`preference_rows`, encoded straight to JSON lines: the stored prompt JSON is
    spliced in as is and only the two replies are escaped (the export's hot path: 100k pairs in about a second)."""
    prompts = td.prompt_cache(project, snapshot_id).json
    flag = {True: "true", False: "false"}
    for pid, chosen, rejected, margin, tie, both_bad in _preference_items(
        project, snapshot_id, include_both_bad=include_both_bad, left_out=left_out
    ):
        line = (
            f'{{"prompt":{prompts[pid]},"chosen":[{{"role":"assistant","content":{_string(chosen)}}}],'
            f'"rejected":[{{"role":"assistant","content":{_string(rejected)}}}],"margin":{margin!r}'
        )
        yield f'{line},"tie":{flag[tie]},"both_bad":{flag[both_bad]}}}' if with_flags else line + "}"


def preference_features(with_flags: bool) -> Any:
    import datasets

    msgs = _messages_feature(datasets)
    cols = {"prompt": msgs, "chosen": msgs, "rejected": msgs, "margin": datasets.Value("float64")}
    if with_flags:
        cols.update(tie=datasets.Value("bool"), both_bad=datasets.Value("bool"))
    return datasets.Features(cols)


def sft_rows(project: Project, snapshot_id: int) -> Iterator[dict[str, Any]]:
    for ex in td.sft_examples(project, snapshot_id):
        yield {"prompt": ex.prompt, "completion": _assistant(ex.completion)}


def sft_features() -> Any:
    import datasets

    msgs = _messages_feature(datasets)
    return datasets.Features({"prompt": msgs, "completion": msgs})


def kto_rows(project: Project, snapshot_id: int) -> Iterator[dict[str, Any]]:
    for ex in td.kto_examples(project, snapshot_id):
        yield {"prompt": ex.prompt, "completion": _assistant(ex.completion), "label": ex.label}


def kto_features() -> Any:
    import datasets

    msgs = _messages_feature(datasets)
    return datasets.Features({"prompt": msgs, "completion": msgs, "label": datasets.Value("bool")})
