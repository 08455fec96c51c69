"""Anthropic HH-RLHF transcripts: ``{"chosen", "rejected"}``, each ``"\\n\\nHuman: … \\n\\nAssistant: …"``.

The prompt is every turn the two transcripts share (the longest common prefix of turns that ends before an
Assistant turn in both), kept as user/assistant messages. The two differing remainders, from that Assistant turn
to the end, are the responses. Splitting at the *last* ``"\\n\\nAssistant:"`` instead would be wrong: some
replies themselves contain ``Human:``/``Assistant:`` turns (see the data README's edge cases), and the remainder
then holds those turns as text, as the crowdworker saw them. Each pair becomes a comparison judged ``a`` (the
chosen response) with no strength and no shown side. Identical transcripts (and pairs whose replies differ only
in surrounding whitespace) are skipped with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .common import Context, Messages
from .reading import Record

_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLE = {"Human": "user", "Assistant": "assistant"}
SKIP_IDENTICAL = "identical chosen and rejected"
SKIP_SAME_REPLY = "chosen and rejected replies differ only in whitespace"
FIELDS = ("chosen", "rejected")


def looks_like_transcript(value: object) -> bool:
    return isinstance(value, str) and (value.startswith("\n\nHuman:") or value.startswith("Human:"))


def _normalise(text: str, ctx: Context, record: Record, field: str) -> str:
    if text.startswith("Human:"):
        text = "\n\n" + text
    if not text.startswith("\n\nHuman:"):
        ctx.error('not an HH-RLHF transcript: it must start with "\\n\\nHuman: "', record, field)
    return text


def split_pair(chosen: str, rejected: str, ctx: Context, record: Record) -> tuple[Messages, str, str] | None:
    """(shared prompt messages, chosen reply, rejected reply); None when the pair is redundant (counted)."""
    if chosen == rejected:
        ctx.report.skip(SKIP_IDENTICAL)
        return None
    chosen = _normalise(chosen, ctx, record, "chosen")
    rejected = _normalise(rejected, ctx, record, "rejected")
    marks = list(_MARKER.finditer(chosen))
    # Turn i-1 is shared when the rejected transcript holds the same marker and text at the same place and a
    # turn marker where chosen's turn i starts (so both texts of turn i-1 end there). One pass, compared in C.
    shared = 0
    rejected_marks: dict[int, re.Match[str]] = {}
    for i in range(1, len(marks)):
        begin, end = marks[i - 1].start(), marks[i].start()
        if not rejected.startswith(chosen[begin:end], begin):
            break
        m = _MARKER.match(rejected, end)
        if m is None:
            break
        rejected_marks[i] = m
        shared = i
    k = None
    for cand in range(shared, 0, -1):
        if (
            marks[cand].group(1) == "Assistant"
            and rejected_marks[cand].group(1) == "Assistant"
            and marks[cand - 1].group(1) != "Assistant"
        ):
            k = cand
            break
    if k is None:
        ctx.error("chosen and rejected share no prompt that ends before an Assistant reply in both", record, "rejected")
    reply_c = chosen[marks[k].end():].strip()
    reply_r = rejected[rejected_marks[k].end():].strip()
    if reply_c == reply_r:
        ctx.report.skip(SKIP_SAME_REPLY)
        return None
    prompt = [
        {"role": _ROLE[marks[i].group(1)], "content": chosen[marks[i].end():marks[i + 1].start()].strip()}
        for i in range(k)
    ]
    if len(chosen) > ctx.max_chars or len(rejected) > ctx.max_chars:  # the cap is per message, not per transcript
        for i, m in enumerate(prompt):
            ctx.check_size(m["content"], record, f"chosen (turn {i + 1})")
        ctx.check_size(reply_c, record, "chosen")
        ctx.check_size(reply_r, record, "rejected")
    return prompt, reply_c, reply_r


def stage_pair(
    chosen: str, rejected: str, ctx: Context, record: Record, *, strength: str | None = None, verdict: str = "a"
) -> None:
    split = split_pair(chosen, rejected, ctx, record)
    if split is None:
        return
    prompt, reply_c, reply_r = split
    st = ctx.staging
    p = st.prompt(prompt, source=ctx.source)
    a = st.response(p, reply_c, source=ctx.source)
    b = st.response(p, reply_r, source=ctx.source)
    st.comparison(p, a, b, verdict=verdict, strength=strength, source=ctx.source)


def parse(records: Iterable[Record], ctx: Context) -> None:
    for rec in records:
        ctx.require(rec, *FIELDS)
        chosen, rejected = rec.data["chosen"], rec.data["rejected"]
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str):
                ctx.error(f"expected a transcript (text), got {type(value).__name__}", rec, field)
        stage_pair(chosen, rejected, ctx, rec)
