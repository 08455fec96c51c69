"""The ``workbench`` command: init, import, export, stats and gui here; train, generate and eval from
``workbench.cli_train``, export-model from ``workbench.cli_export`` (registered when present).

Every command prints one clear message and exits non-zero on bad input; nothing here imports Qt or torch
(``workbench gui`` starts the window as its own process, ``python -m ui``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from . import __version__
from .errors import WorkbenchError
from .store import Project

# Subcommand modules that add their own parsers with ``register(subparsers)``.
EXTENSION_MODULES = ("workbench.cli_train", "workbench.cli_export")


def _cmd_init(args: argparse.Namespace) -> int:
    with Project.create(args.project):
        pass
    print(f"created project {args.project}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .backups import back_up
    from .importers import import_file
    from .messages import DEFAULT_MAX_MESSAGE_CHARS

    with Project.open(args.project) as project:
        if not args.no_backup:
            back_up(project, "before-import")
        report = import_file(
            project, args.file, args.format, max_chars=args.max_chars or DEFAULT_MAX_MESSAGE_CHARS, source=args.source
        )
    print(report.summary())
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .exporters import export

    with Project.open(args.project) as project:
        report = export(
            project,
            args.out,
            args.format,
            include_ties=args.include_ties,
            include_both_bad=args.include_both_bad,
            include_retests=args.include_retests,
            include_eval=args.include_eval,
            include_winners=args.include_winners,
            snapshot_id=args.snapshot,
        )
    print(report.summary())
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        stats = project.stats()
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
        return 0
    print(f"project {args.project}")
    for key in ("prompts", "heldout_prompts", "responses", "comparisons", "judged", "pending", "rankings", "demonstrations", "flags", "runs"):
        print(f"  {key:<16} {stats[key]:>10,}")
    print("  verdicts        " + ", ".join(f"{k} {v:,}" for k, v in stats["verdicts"].items()))
    print("  strengths       " + ", ".join(f"{k} {v:,}" for k, v in stats["strengths"].items()))
    if stats["flag_categories"]:
        print("  flags           " + ", ".join(f"{k} {v:,}" for k, v in stats["flag_categories"].items()))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .project_check import check_project

    report = check_project(args.project, repair=args.repair)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _cmd_backup(args: argparse.Namespace) -> int:
    from .backups import write_copy

    with Project.open(args.project, migrate=False, read_only=None) as project:
        out = write_copy(project, args.out)
    print(f"backed up {args.project} to {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from .backups import restore

    replaced = restore(args.backup, args.project)
    kept = f"; the replaced file is kept as {replaced}" if replaced else ""
    print(f"restored {args.project} from {args.backup}{kept}")
    return 0


def _cmd_gui(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "ui"]
    if args.project:
        cmd.append(str(args.project))
    if args.smoke_test:
        cmd.append("--smoke-test")
    code = subprocess.call(cmd)
    if code not in (0, 2, 3):
        # Qt aborts without naming what is missing when its platform plugin cannot load: name the libraries.
        subprocess.call([sys.executable, "-m", "ui.system_check"])
    return code


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import ensure_demo_project

    path = ensure_demo_project(Path(args.path) if args.path else None)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .exporters import EXPORT_FORMATS
    from .importers import IMPORT_FORMATS

    parser = argparse.ArgumentParser(prog="workbench", description="RLHF Workbench: annotate, train and compare, offline.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create a new, empty project file")
    p.add_argument("project", type=Path)
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("import", help="import a data file into a project (one transaction: all or nothing)")
    p.add_argument("project", type=Path)
    p.add_argument("file", type=Path)
    p.add_argument("--format", default="auto", help=f"one of {', '.join(IMPORT_FORMATS)} (default: auto)")
    p.add_argument("--source", default=None, help="source name to record (default: derived from the file)")
    p.add_argument("--max-chars", type=int, default=None, help="size cap of one message in characters (default 2 MB)")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.add_argument("--no-backup", action="store_true",
                   help="skip the backup made before the import (into PROJECT.backups/)")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", help="export training data or the whole project")
    p.add_argument("project", type=Path)
    p.add_argument("out", type=Path, help="an OUT ending in .jsonl gets JSON Lines, any other a `datasets` folder")
    p.add_argument("--format", required=True, help=f"one of {', '.join(EXPORT_FORMATS)}")
    p.add_argument("--include-ties", action="store_true", help="keep tie judgments (preference data)")
    p.add_argument("--include-both-bad", action="store_true", help="keep both-bad judgments (KTO data)")
    p.add_argument("--include-retests", action="store_true", help="keep retest rows (left out by default)")
    p.add_argument("--include-eval", action="store_true", help="keep blind-evaluation items (left out by default)")
    p.add_argument("--include-winners", action="store_true", help="SFT: add winning responses to the demonstrations")
    p.add_argument("--snapshot", type=int, default=None, help="export exactly the rows of this snapshot id")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("stats", help="counts of a project")
    p.add_argument("project", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("check", help="check a project file for damage (exit 0: all is well, 1: problems found)")
    p.add_argument("project", type=Path)
    p.add_argument("--repair", action="store_true", help="rebuild what can be rebuilt and say what could not")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("backup", help="write a consistent copy of a project to the file OUT (safe while it is in use)")
    p.add_argument("project", type=Path)
    p.add_argument("out", type=Path)
    p.set_defaults(func=_cmd_backup)

    p = sub.add_parser("restore", help="put a backup in place as PROJECT, keeping the replaced file beside it")
    p.add_argument("backup", type=Path)
    p.add_argument("project", type=Path)
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("gui", help="open the window (on the demo project when no PROJECT is given)")
    p.add_argument("project", type=Path, nargs="?")
    p.add_argument("--smoke-test", action="store_true",
                   help="open the real window, check that it shows on the platform asked for, then exit (0: it works)")
    p.set_defaults(func=_cmd_gui)

    p = sub.add_parser("demo", help="create the demo project (if missing) and print its path")
    p.add_argument("path", nargs="?", help="where to create it (default: the application's data folder)")
    p.set_defaults(func=_cmd_demo)

    for name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except sqlite3.Error as e:
        project = getattr(args, "project", None)
        print(f"error: {project or 'project'}: database error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
