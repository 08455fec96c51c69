"""FastChat MT-Bench and Vicuna-Bench: question files and GPT-4 reference-answer files.

- ``question.jsonl`` (``question_id, category, turns[, reference]``): one prompt per question holding its
  **first** turn only, tagged ``mt-bench`` or ``vicuna-bench`` (from the path), ``category:<c>``,
  ``<bench>:question=<id>`` and, for multi-turn questions, ``<bench>:turns=<n>``. The later turns are not stored
  as further user messages: they answer the model's first reply, so without an assistant turn between them the
  conversation would be wrong.
- ``reference_answer/<model>.jsonl`` (``question_id, model_id, choices[0].turns``): needs the ``question.jsonl``
  beside its folder. Turn 1's answer becomes a demonstration on the first-turn prompt; for each later turn, a
  prompt holding the conversation so far (user turn 1, the reference answer 1, user turn 2, …) and the reference
  answer to that turn as its demonstration. Prompts are tagged as above plus ``<bench>:turn=<i>``.
  The question file's own ``reference`` field (short reference solutions for judging) is not imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import Context, Messages
from .reading import Record, load

QUESTION_FIELDS = ("question_id", "category", "turns")
ANSWER_FIELDS = ("question_id", "model_id", "choices")


def kind_of(keys: Any) -> str | None:
    keys = set(keys)
    if {"question_id", "turns"} <= keys:
        return "questions"
    if {"question_id", "choices"} <= keys:
        return "answers"
    return None


def bench_name(path: Path) -> str:
    return "vicuna-bench" if "vicuna" in str(path).lower() else "mt-bench"


def _turns(value: Any, ctx: Context, rec: Record, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        ctx.error("expected a non-empty list of turns (text)", rec, field)
    for i, t in enumerate(value):
        if not isinstance(t, str) or not t.strip():
            ctx.error("expected non-empty text", rec, f"{field}[{i}]")
        ctx.check_size(t, rec, f"{field}[{i}]")
    return value


def _question_id(rec: Record, ctx: Context) -> int:
    qid = rec.data.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, (int, str)) or str(qid).strip() == "":
        ctx.error(f"expected a question id, got {qid!r}", rec, "question_id")
    return qid  # type: ignore[return-value]


def _questions(records: list[Record], ctx: Context) -> dict[Any, tuple[list[str], list[str]]]:
    """Stage each question's first turn; returns question id → (turns, tags)."""
    bench = bench_name(ctx.path)
    out = {}
    for rec in records:
        ctx.require(rec, *QUESTION_FIELDS)
        qid = _question_id(rec, ctx)
        if qid in out:
            ctx.error(f"question id {qid} appears twice", rec, "question_id")
        category = ctx.text(rec, "category", allow_empty=False).strip()
        turns = _turns(rec.data["turns"], ctx, rec, "turns")
        tags = [bench, f"category:{category}", f"{bench}:question={qid}"]
        if len(turns) > 1:
            tags.append(f"{bench}:turns={len(turns)}")
        out[qid] = (turns, tags)
    return out


def parse(records: list[Record], ctx: Context) -> None:
    kind = kind_of(records[0].data)
    if kind == "answers":
        _answers(records, ctx)
        return
    if kind is None:
        ctx.error(
            "not an MT-Bench file: expected question_id, category, turns (questions) or question_id, model_id, "
            f"choices (reference answers); found {', '.join(sorted(records[0].data)) or 'none'}", records[0],
        )
    for turns, tags in _questions(records, ctx).values():
        ctx.staging.prompt([{"role": "user", "content": turns[0]}], source=ctx.source, tags=tags, standalone=True)


def _answers(records: list[Record], ctx: Context) -> None:
    qpath = ctx.path.parent.parent / "question.jsonl"
    if not qpath.is_file():
        ctx.error(f"reference answers need their question file, {qpath}, which is missing", records[0], "question_id")
    qfile = load(qpath, max_chars=ctx.max_chars)  # its errors name the question file itself
    qctx = Context(qpath, ctx.source, ctx.max_chars, ctx.staging, ctx.report, ctx.explicit_source, qfile.container)
    questions = _questions(qfile.records, qctx)
    st = ctx.staging
    for rec in records:
        ctx.require(rec, *ANSWER_FIELDS)
        qid = _question_id(rec, ctx)
        if qid not in questions:
            ctx.error(f"no question {qid} in {qpath.name}", rec, "question_id")
        model = rec.data["model_id"]
        if not isinstance(model, str) or not model.strip():
            ctx.error("expected the answering model's name", rec, "model_id")
        choices = rec.data["choices"]
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            ctx.error("expected a list of choices, each an object with turns", rec, "choices")
        answers = _turns(choices[0].get("turns"), ctx, rec, "choices[0].turns")
        turns, tags = questions[qid]
        source = ctx.source if ctx.explicit_source else f"{ctx.source}:{model}"
        conversation: Messages = []
        for i, (question, answer) in enumerate(zip(turns, answers), 1):
            conversation = conversation + [{"role": "user", "content": question}]
            p = st.prompt(conversation, source=ctx.source, tags=[*tags, f"{tags[0]}:turn={i}"])
            st.demonstration(p, st.response(p, answer, source=source, model=model), source=source)
            conversation = conversation + [{"role": "assistant", "content": answer}]
