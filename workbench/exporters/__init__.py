"""Export: the project's judgments as training data for the Hugging Face ecosystem, and the lossless project file
exchange. ``export()`` is what ``workbench export`` calls.

Every export first records a snapshot of the rows it writes (or uses the one it is given), so a file handed to
TRL can always be traced back to the exact judgments behind it; the report carries the snapshot id.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from .. import training_data as td
from ..errors import InputError, WorkbenchError
from ..reports import ExportReport
from ..store import Project
from . import safety, trl
from .output import check_out, is_jsonl, write_dataset, write_jsonl, write_lines

EXPORT_FORMATS = ("trl-preference", "trl-sft", "trl-kto", "safety", "project")
# Which include_* options mean something for each format (a tie has no absolute label for KTO, a winner only
# matters to SFT, safety labels have no verdicts): any other option is refused rather than silently ignored.
APPLIES = {
    "trl-preference": {"include_ties", "include_both_bad", "include_retests", "include_eval"},
    "trl-sft": {"include_winners", "include_eval"},
    "trl-kto": {"include_both_bad", "include_retests", "include_eval"},
    "safety": set(),
    "project": set(),
}
# The kind of snapshot each format reads (trl-kto also accepts a preference snapshot: pairs unpaired).
SNAPSHOT_KINDS = {"trl-preference": ("preference",), "trl-sft": ("sft",), "trl-kto": ("kto", "preference"), "safety": ("safety",)}


def export(
    project: Project,
    out: str | os.PathLike[str],
    fmt: str,
    *,
    include_ties: bool = False,
    include_both_bad: bool = False,
    include_retests: bool = False,
    include_eval: bool = False,
    include_winners: bool = False,
    snapshot_id: int | None = None,
) -> ExportReport:
    """Write the project's data in format ``fmt`` to ``out`` (``.jsonl``/``.jsonl.gz``: JSON Lines; anything else:
    a ``datasets`` folder). Held-out prompts never enter a training export. With ``snapshot_id`` the rows are that
    snapshot's and the ``include_*`` filters must be left unset (the snapshot already fixed them)."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r}; valid formats: {', '.join(EXPORT_FORMATS)}", field="--format")
    out = Path(out)
    flags = dict(
        include_ties=include_ties, include_both_bad=include_both_bad, include_retests=include_retests,
        include_eval=include_eval, include_winners=include_winners,
    )
    wrong = sorted(k for k, v in flags.items() if v and k not in APPLIES[fmt])
    if wrong:
        raise InputError(
            f"{', '.join(wrong)} does not apply to {fmt} (it takes: {', '.join(sorted(APPLIES[fmt])) or 'no include options'})",
            field="--format",
        )
    if fmt == "project":
        from ..exchange import export_project

        if snapshot_id is not None:
            raise InputError("the project format writes every row; it takes no snapshot", field="snapshot")
        if not is_jsonl(out):
            raise InputError("the project format is JSON Lines: give an OUT ending in .jsonl or .jsonl.gz", str(out))
        return export_project(project, out)

    check_out(out)  # before anything is recorded: a bad target changes nothing
    report = ExportReport(out=str(out), format=fmt)
    if snapshot_id is not None:
        set_flags = [k for k, v in flags.items() if v]
        if set_flags:
            raise InputError(f"a snapshot fixes the rows; drop {', '.join(set_flags)}", field="snapshot")
        try:
            options = td.snapshot_options(project, snapshot_id)
            kind = project.get_snapshot(snapshot_id)["kind"]
        except WorkbenchError as e:
            raise InputError(str(e), field="snapshot") from None
        if kind not in SNAPSHOT_KINDS[fmt]:
            raise InputError(f"snapshot {snapshot_id} holds {kind} data; {fmt} needs a {' or '.join(SNAPSHOT_KINDS[fmt])} snapshot", field="snapshot")
        include_ties = bool(options.get("include_ties"))
        include_both_bad = bool(options.get("include_both_bad"))
        sid = snapshot_id
    else:
        sid = _take_snapshot(project, fmt, report.left_out, **flags)
    report.snapshot_id = sid
    try:
        _write(project, out, fmt, sid, report, include_ties=include_ties, include_both_bad=include_both_bad)
    except BaseException:
        if snapshot_id is None:
            # nothing was written, so nothing was exported: drop the snapshot taken for it (items cascade)
            project.delete_snapshot(sid)
        raise
    return report


def _write(
    project: Project, out: Path, fmt: str, sid: int, report: ExportReport, *, include_ties: bool, include_both_bad: bool
) -> None:
    if fmt == "trl-preference":
        with_flags = include_ties or include_both_bad
        how = dict(with_flags=with_flags, include_both_bad=include_both_bad, left_out=report.left_out)
        if is_jsonl(out):
            report.rows = write_lines(out, trl.preference_lines(project, sid, **how))
            return
        rows = trl.preference_rows(project, sid, **how)
        features = lambda: trl.preference_features(with_flags)  # noqa: E731
    elif fmt == "trl-sft":
        rows, features = trl.sft_rows(project, sid), trl.sft_features
    elif fmt == "trl-kto":
        rows, features = trl.kto_rows(project, sid), trl.kto_features
    else:
        rows, features = safety.safety_rows(project, sid), safety.safety_features
    report.rows = write_jsonl(out, rows) if is_jsonl(out) else write_dataset(out, list(rows), features)


def _take_snapshot(project: Project, fmt: str, left_out: Counter[str], *, include_winners: bool, **filters: bool) -> int:
    note = f"export {fmt}"
    if fmt == "trl-preference":
        sid, reasons = td.preference_snapshot_reporting(project, note=note, **filters)
        left_out.update(reasons)
        return sid
    if fmt == "trl-sft":
        return td.sft_snapshot(project, include_winners=include_winners, include_eval=filters["include_eval"], note=note)
    if fmt == "trl-kto":
        kto = {k: v for k, v in filters.items() if k != "include_ties"}
        sid = td.kto_snapshot(project, note=note, **kto)
        left_out.update(td.preference_left_out(project, **kto))
        return sid
    return td.safety_snapshot(project, note=note)
