"""The OpenAI moderation evaluation set: ``{"prompt", "S", "H", "V", "HR", "SH", "S3", "H2", "V2"}``.

Each text becomes a prompt (one user message) tagged ``moderation``. Its labels become safety-flag rows on the
prompt itself (no response), one per built-in category the file's codes map to: S → sexual, S3 → sexual_minors,
H/H2/HR → hate_harassment, V/V2 → violence, SH → self_harm. A category is present (severity medium) when any of
its known codes is 1, and absent (present = 0) only when **every** code mapped to it is in the record and 0. A
**missing key means unknown**: a record with only ``HR=0`` says nothing about hate (``H``), so hate_harassment gets
no row, and neither does a category none of whose codes is in the record. The note lists the original codes, e.g.
``openai-moderation H=0 H2=1 HR=0``. A text seen twice in the file is one prompt (counted as a duplicate); labels
the second copy adds are kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from .common import Context, user
from .reading import Record

CODES = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")
CATEGORY_OF = {
    "S": "sexual", "S3": "sexual_minors",
    "H": "hate_harassment", "H2": "hate_harassment", "HR": "hate_harassment",
    "V": "violence", "V2": "violence",
    "SH": "self_harm",
}
CATEGORY_CODES = {cat: tuple(c for c in ("S", "S3", "H", "H2", "HR", "V", "V2", "SH") if CATEGORY_OF[c] == cat)
                  for cat in dict.fromkeys(CATEGORY_OF.values())}
SEVERITY = "medium"
TAG = "moderation"


def looks_like(keys: Iterable[str]) -> bool:
    keys = set(keys)
    return "prompt" in keys and bool(keys & set(CODES)) and not keys & {"chosen", "rejected", "completion", "messages"}


def parse(records: Iterable[Record], ctx: Context) -> None:
    st = ctx.staging
    for rec in records:
        text = ctx.text(rec, "prompt", allow_empty=False)
        labels: dict[str, int] = {}
        for code in CODES:
            if code not in rec.data:
                continue
            value = rec.data[code]
            if isinstance(value, bool) or value not in (0, 1):
                ctx.error(f"a moderation label must be 0 or 1, got {value!r}", rec, code)
            labels[code] = int(value)
        unknown = sorted(k for k in rec.data if k != "prompt" and k not in CODES)
        if unknown:
            ctx.error(f"unknown moderation label {unknown[0]!r} (expected {', '.join(CODES)})", rec, unknown[0])
        p = st.prompt(user(text), source=ctx.source, tags=[TAG], standalone=True)
        for category, codes in CATEGORY_CODES.items():
            known = [c for c in codes if c in labels]
            present = any(labels[c] for c in known)
            if not present and len(known) < len(codes):
                continue  # a missing key is unknown, not 0: absence is claimed only when every code says so
            note = "openai-moderation " + " ".join(f"{c}={labels[c]}" for c in known)
            st.flag(p, category, present=present, severity=SEVERITY if present else None, note=note, source=ctx.source)
