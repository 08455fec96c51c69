"""OpenAI-style chat JSONL, ``{"messages": [{role, content}, …]}`` (also TRL's ``messages`` data sets).

A conversation that ends with an assistant turn is a demonstration: the prompt is every earlier turn and the
final assistant turn is the answer. Any other conversation is stored as a prompt. Roles other than system, user and
assistant (e.g. ``tool``) and non-text content are refused, naming the message.
"""

from __future__ import annotations

from collections.abc import Iterable

from .common import Context
from .reading import Record

SKIP_EMPTY = "empty assistant reply"


def parse(records: Iterable[Record], ctx: Context) -> None:
    st = ctx.staging
    for rec in records:
        ctx.require(rec, "messages")
        messages = ctx.messages(rec.data["messages"], rec, "messages")
        if messages[-1]["role"] == "assistant":
            if len(messages) < 2:
                ctx.error("a conversation needs a turn before the assistant's reply", rec, "messages")
            if not messages[-1]["content"].strip():
                ctx.report.skip(SKIP_EMPTY)
                continue
            p = st.prompt(messages[:-1], source=ctx.source)
            st.demonstration(p, st.response(p, messages[-1]["content"], source=ctx.source), source=ctx.source)
        else:
            st.prompt(messages, source=ctx.source, standalone=True)
