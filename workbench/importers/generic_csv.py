"""A plain CSV of text columns: ``prompt,chosen,rejected`` (optional ``margin``), ``chosen,rejected``,
``prompt,completion`` (optional ``label``) or ``prompt`` alone. Rows mean what the TRL standard kinds mean
(see :mod:`.trl`). Any other column is refused, so a misnamed column is an error instead of silently lost data."""

from __future__ import annotations

from . import trl
from .common import Context
from .reading import LoadedFile, Record

ACCEPTED = (
    ("prompt", "chosen", "rejected", "margin"),
    ("prompt", "chosen", "rejected"),
    ("chosen", "rejected", "margin"),
    ("chosen", "rejected"),
    ("prompt", "completion", "label"),
    ("prompt", "completion"),
    ("prompt",),
)


def parse(loaded: LoadedFile, ctx: Context) -> None:
    if loaded.container != "csv" or loaded.header is None:
        ctx.error("--format csv needs a CSV file with a header row")
    header = [h.lower() for h in loaded.header]
    if set(header) not in [set(a) for a in ACCEPTED]:
        missing_or_extra = sorted(set(header) - {"prompt", "chosen", "rejected", "margin", "completion", "label"})
        field = missing_or_extra[0] if missing_or_extra else None
        accepted = "; ".join(",".join(a) for a in ACCEPTED)
        ctx.error(f"unexpected columns {','.join(loaded.header)}; expected one of: {accepted}", 1, field)
    records = [Record(r.line, {k.lower(): v for k, v in r.data.items()}) for r in loaded.records]
    kind = trl.kind_of(header)
    trl.parse(records, ctx, kind=kind)
