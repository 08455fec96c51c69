"""TRL data sets, standard (text) and conversational (lists of messages), one kind per file:

- preference: ``prompt``/``chosen``/``rejected``, or implicit-prompt ``chosen``/``rejected``. Conversational rows
  are split at the longest shared prefix (so an explicit prompt and an implicit one give the same prompt); the two
  continuations must each be one assistant message. A prompt column the chosen and rejected conversations already
  start with (a text prompt beside whole conversations, or the same list of messages) is not prepended again.
  Standard implicit-prompt rows that are HH-style transcripts go through the HH-RLHF splitter; other standard
  implicit rows use TRL's own rule (the longest common leading text is the prompt). Each row becomes a comparison
  judged ``a`` (chosen = response_a). An optional ``margin`` maps back to a strength: the nearest of our export's
  margins (0 none, 1/3 slight, 2/3 clear, 1 strong).
  Optional bool columns ``tie`` and ``both_bad`` (written by our ``trl-preference`` export when ties or both-bad
  verdicts are asked for) turn the row into that verdict, with response A = ``chosen``, B = ``rejected``.
- ``prompt``/``completion``: a demonstration of the completion.
- ``messages``: as OpenAI chat (see :mod:`.openai_chat`): a demonstration when the last turn is the assistant's.
- ``prompt``/``completion``/``label`` (KTO, unpaired): every completion is stored as an imported response; label
  ``true`` (desirable) also makes it a demonstration (note ``kto:label=true``); an undesirable response's
  ``source`` ends in ``#kto=false``. So that a ``trl-kto`` export gives the labels back (it reads demonstrations
  as desirable, comparison winners as desirable and losers or both-bad pairs as undesirable), undesirable
  completions are also paired within their prompt: each with a desirable one (round robin) in a comparison the
  desirable one wins (no strength), or, when the prompt has no desirable completion, with the next undesirable
  one in a ``both_bad`` comparison (exported with ``--include-both-bad``). Those comparisons carry the note
  ``from KTO labels`` and are implied by the labels (a desirable answer beats an undesirable one to the same
  prompt). A prompt's lone undesirable completion cannot be paired: it stays a response marked only by its
  source, and a ``trl-kto`` export leaves it out. The same completion to the same prompt labelled both ways is an
  input error.
- ``prompt`` alone: prompts.

Extra columns are ignored (many published sets carry ids and scores), except beside a lone ``prompt``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import hh_rlhf, openai_chat
from .common import Context, Messages, parse_bool, split_shared_prefix, strength_from_margin, user
from .reading import Record
from .staging import fast_response_hash

KINDS = {
    "preference": ("chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "sft": ("prompt", "completion"),
    "messages": ("messages",),
    "prompt": ("prompt",),
}
KTO_FALSE_SUFFIX = "#kto=false"
KTO_TRUE_NOTE = "kto:label=true"
KTO_PAIR_NOTE = "from KTO labels"
SKIP_IDENTICAL = hh_rlhf.SKIP_IDENTICAL
SKIP_EMPTY = "empty completion"


def kind_of(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    for kind, required in KINDS.items():
        if set(required) <= keys:
            return kind
    return None


def _conversation(value: Any, ctx: Context, rec: Record, field: str) -> Messages:
    if isinstance(value, str):
        ctx.check_size(value, rec, field)
        return user(value)
    if not isinstance(value, list):
        ctx.error(f"expected text or a list of messages, got {type(value).__name__}", rec, field)
    return ctx.messages(value, rec, field)


def _one_reply(rest: Messages, ctx: Context, rec: Record, field: str) -> str:
    if len(rest) != 1 or rest[0]["role"] != "assistant":
        ctx.error(
            f"the {field} continuation must be exactly one assistant message after the shared prompt, got "
            f"{len(rest)} message(s)", rec, field,
        )
    return rest[0]["content"]


def _text_prefix_split(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's rule for standard implicit prompts: the longest common leading text, not cutting inside a word."""
    lo, limit = 0, min(len(chosen), len(rejected))
    hi = limit
    while lo < hi:  # binary search on slice equality: the comparisons run in C
        mid = (lo + hi + 1) // 2
        if chosen[:mid] == rejected[:mid]:
            lo = mid
        else:
            hi = mid - 1
    n = lo
    if n < limit or len(chosen) != len(rejected):
        while n > 0 and not chosen[n - 1].isspace():
            n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def _preference(rec: Record, ctx: Context) -> None:
    d = rec.data
    chosen, rejected = d.get("chosen"), d.get("rejected")
    strength = strength_from_margin(d.get("margin"), ctx, rec)
    verdict = "a"
    flags = {k: parse_bool(d[k], ctx, rec, k) for k in ("tie", "both_bad") if d.get(k) not in (None, "")}
    if flags.get("tie") and flags.get("both_bad"):
        ctx.error("a row cannot be both a tie and both bad", rec, "both_bad")
    if flags.get("tie") or flags.get("both_bad"):
        verdict, strength = ("tie" if flags.get("tie") else "both_bad"), None
    prompt = d.get("prompt")
    st = ctx.staging
    if isinstance(chosen, str) and isinstance(rejected, str) and prompt is None:
        if hh_rlhf.looks_like_transcript(chosen):
            hh_rlhf.stage_pair(chosen, rejected, ctx, rec, strength=strength, verdict=verdict)
            return
        if chosen == rejected:
            ctx.report.skip(SKIP_IDENTICAL)
            return
        ctx.check_size(chosen, rec, "chosen")
        ctx.check_size(rejected, rec, "rejected")
        shared, reply_c, reply_r = _text_prefix_split(chosen, rejected)
        if not shared.strip():
            ctx.error("chosen and rejected share no leading prompt text (and there is no prompt column)", rec, "prompt")
        messages, reply_c, reply_r = user(shared.strip()), reply_c.strip(), reply_r.strip()
    elif isinstance(chosen, str) or isinstance(rejected, str):
        if not (isinstance(chosen, str) and isinstance(rejected, str)):
            bad = "rejected" if isinstance(chosen, str) else "chosen"
            ctx.error("chosen and rejected must both be text or both be lists of messages", rec, bad)
        if not isinstance(prompt, str):
            ctx.error("expected text, like chosen and rejected", rec, "prompt")
        ctx.check_size(prompt, rec, "prompt")
        ctx.check_size(chosen, rec, "chosen")
        ctx.check_size(rejected, rec, "rejected")
        messages, reply_c, reply_r = user(prompt), chosen, rejected
    else:
        head = [] if prompt is None else _conversation(prompt, ctx, rec, "prompt")
        whole_c = ctx.messages(chosen, rec, "chosen")
        whole_r = ctx.messages(rejected, rec, "rejected")
        if isinstance(prompt, str) and whole_c[0]["role"] != "assistant":
            # Text prompt beside whole conversations (UltraFeedback-style): the lists carry the prompt, as TRL's
            # maybe_extract_prompt reads them; the text column is only a copy.
            head = []
        elif head and whole_c[:len(head)] == head and whole_r[:len(head)] == head:
            # A list prompt that both conversations already start with: a copy too, not turns to repeat.
            head = []
        conv_c = head + whole_c
        conv_r = head + whole_r
        if conv_c == conv_r:
            ctx.report.skip(SKIP_IDENTICAL)
            return
        k = split_shared_prefix(conv_c, conv_r)
        if k is None:
            ctx.error("chosen and rejected share no prompt that ends before an assistant reply in both", rec, "chosen")
        messages = conv_c[:k]
        reply_c = _one_reply(conv_c[k:], ctx, rec, "chosen")
        reply_r = _one_reply(conv_r[k:], ctx, rec, "rejected")
    if reply_c == reply_r:
        ctx.report.skip(SKIP_IDENTICAL)
        return
    p = st.prompt(messages, source=ctx.source)
    a = st.response(p, reply_c, source=ctx.source)
    b = st.response(p, reply_r, source=ctx.source)
    st.comparison(p, a, b, verdict=verdict, strength=strength, source=ctx.source)


def _completion(rec: Record, ctx: Context) -> tuple[Messages, str] | None:
    d = rec.data
    prompt, completion = d["prompt"], d["completion"]
    if isinstance(prompt, str) != isinstance(completion, str):
        ctx.error("prompt and completion must both be text or both be lists of messages", rec, "completion")
    if isinstance(prompt, str):
        ctx.check_size(prompt, rec, "prompt")
        ctx.check_size(completion, rec, "completion")
        messages, reply = user(prompt), completion
    else:
        messages = ctx.messages(prompt, rec, "prompt")
        reply = _one_reply(ctx.messages(completion, rec, "completion"), ctx, rec, "completion")
    if not reply.strip():
        ctx.report.skip(SKIP_EMPTY)
        return None
    return messages, reply


def _sft(rec: Record, ctx: Context) -> None:
    got = _completion(rec, ctx)
    if got is None:
        return
    st = ctx.staging
    p = st.prompt(got[0], source=ctx.source)
    st.demonstration(p, st.response(p, got[1], source=ctx.source), source=ctx.source)


def _kto(records: list[Record], ctx: Context) -> None:
    st = ctx.staging
    desirable: dict[str, list] = {}
    undesirable: dict[str, list] = {}
    labelled: dict[tuple[str, str], tuple[bool, int]] = {}  # (prompt key, response hash) -> (label, first record)
    unit = {"csv": "row", "json": "item"}.get(ctx.container, "line")
    for rec in records:
        ctx.require(rec, *KINDS["kto"])
        label = parse_bool(rec.data["label"], ctx, rec, "label")
        got = _completion(rec, ctx)
        if got is None:
            continue
        p = st.prompt(got[0], source=ctx.source)
        # A completion both desirable and undesirable has no meaning (and would be paired against itself).
        first = labelled.setdefault((p, fast_response_hash(got[1])), (label, rec.line))
        if first[0] != label:
            ctx.error(
                f"the same completion is labelled both desirable and undesirable (also on {unit} {first[1]})",
                rec, "label",
            )
        if label:
            r = st.response(p, got[1], source=ctx.source)
            if st.demonstration(p, r, source=ctx.source, note=KTO_TRUE_NOTE):
                desirable.setdefault(p, []).append(r)
        else:
            r = st.response(p, got[1], source=ctx.source + KTO_FALSE_SUFFIX, standalone=True)
            if r not in undesirable.setdefault(p, []):
                undesirable[p].append(r)
    for p, bad in undesirable.items():
        good = desirable.get(p, [])
        if good:
            for i, r in enumerate(bad):
                st.comparison(p, good[i % len(good)], r, verdict="a", strength=None, source=ctx.source, note=KTO_PAIR_NOTE)
        else:
            for r1, r2 in zip(bad, bad[1:]):
                st.comparison(p, r1, r2, verdict="both_bad", strength=None, source=ctx.source, note=KTO_PAIR_NOTE)


def _prompt_only(rec: Record, ctx: Context) -> None:
    value = rec.data["prompt"]
    if isinstance(value, str) and not value.strip():
        ctx.error("is empty", rec, "prompt")
    ctx.staging.prompt(_conversation(value, ctx, rec, "prompt"), source=ctx.source, standalone=True)


_HANDLERS = {"preference": _preference, "sft": _sft, "prompt": _prompt_only}


def parse(records: list[Record], ctx: Context, *, kind: str | None = None) -> None:
    """Stage every record; the file's kind comes from its first record unless given."""
    if kind is None:
        kind = kind_of(records[0].data)
        if kind is None:
            ctx.error(
                "not a TRL data set: expected the columns prompt/chosen/rejected, chosen/rejected, prompt/completion, "
                f"prompt/completion/label, messages or prompt; found {', '.join(sorted(records[0].data)) or 'none'}",
                records[0],
            )
    if kind == "messages":
        openai_chat.parse(records, ctx)
        return
    if kind == "prompt":
        extra = sorted(set(records[0].data) - {"prompt"})
        if extra:
            ctx.error(f"unexpected column {extra[0]!r} beside a lone prompt column", records[0], extra[0])
    if kind == "kto":
        _kto(records, ctx)
        return
    handler = _HANDLERS[kind]
    for rec in records:
        ctx.require(rec, *KINDS[kind])
        handler(rec, ctx)
