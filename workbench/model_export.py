"""Exporting a trained adapter (merged model, GGUF, Ollama): the checks that need no model library, and starting the
export job the same way from the command line and the window.

An export is a job like a training run (``python -m engine.worker``, stage ``export``, events on stdout) but it makes
no run row: it is an action on a run, or on an adapter folder that belongs to no project. So it runs from a job
folder of its own in the system's temporary folder (``config.yaml``, ``job.json``, ``events.log``), which
:class:`ExportHandle` removes when the job has ended. The job builds OUT in ``.<OUT name>.export-<worker pid>``
beside OUT and renames it into place only after the export has checked itself; the job removes that folder when it
fails, and the handle removes it if the worker died before it could.

:func:`check_request` refuses, before any process starts, what is wrong on its face: an adapter folder that is not
one (or holds pickled weights anywhere), an OUT that exists and is not empty, an OUT whose parent folder is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .configs import ExportConfig
from .errors import InputError
from .jobs.client import RunHandle, spawn_worker
from .jobs.protocol import CONFIG_FILE, JOB_FILE, Event
from .paths import exports_dir

# Files that hold pickled Python objects: loading them can run code, so none may come with an adapter.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
ADAPTER_DIR = "adapter"


def build_dir(out: str | os.PathLike[str], pid: int) -> Path:
    """Where the export job of worker ``pid`` builds OUT (beside it, so the final rename stays on one disk)."""
    out = Path(out)
    return out.parent / f".{out.name}.export-{pid}"


def locate_run(adapter: str | os.PathLike[str]) -> tuple[Path, int] | None:
    """(project file, run id) when ``adapter`` is a project run's output (``PROJECT.runs/<id>/adapter``)."""
    folder = Path(adapter).expanduser().resolve()
    run_folder, runs = folder.parent, folder.parent.parent
    if folder.name != ADAPTER_DIR or not runs.name.endswith(".runs") or not run_folder.name.isdigit():
        return None
    project = runs.with_name(runs.name[: -len(".runs")])
    return (project, int(run_folder.name)) if project.is_file() else None


def default_output(project_path: str | os.PathLike[str], run_id: int, fmt: str, quant: str = "f16") -> Path:
    """Where an export of run ``run_id`` goes unless another folder is chosen: ``NAME.exports/run-7-gguf-f16``
    (numbered ``-2``, ``-3``… when taken)."""
    stem = f"run-{run_id}-{fmt}" + (f"-{quant}" if fmt != "hf" else "")
    folder = exports_dir(project_path)
    out, n = folder / stem, 1
    while out.exists():
        n += 1
        out = folder / f"{stem}-{n}"
    return out


def pickled_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def check_request(config: ExportConfig) -> None:
    """Refuse an export that cannot succeed, before a worker starts; every message names the path."""
    config.validate()
    if not config.adapter:
        raise InputError("give the adapter folder to export", field="adapter")
    adapter = Path(config.adapter).expanduser()
    if not adapter.is_dir():
        raise InputError("no such adapter folder", path=str(adapter))
    if not (adapter / "adapter_config.json").is_file():
        hint = (f"; the run's adapter is {adapter / ADAPTER_DIR}" if (adapter / ADAPTER_DIR / "adapter_config.json").is_file()
                else "")
        raise InputError(f"not a LoRA adapter folder (no adapter_config.json){hint}", path=str(adapter))
    pickles = pickled_files(adapter)
    if pickles:
        names = ", ".join(str(p.relative_to(adapter)) for p in pickles[:3])
        raise InputError(f"the adapter folder holds pickled files ({names}), which can run code when loaded; only "
                         "safetensors are loaded, so remove or convert them first", path=str(adapter))
    if not (adapter / "adapter_model.safetensors").is_file():
        raise InputError("the adapter folder has no adapter_model.safetensors", path=str(adapter))
    if not config.output:
        raise InputError("give the folder to write the export to", field="output")
    out = Path(config.output).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError("exists and is a file; the export writes a folder", path=str(out))
    if out.is_dir() and any(out.iterdir()):
        raise InputError("exists and is not empty; choose a new folder (the export never overwrites)", path=str(out))
    if not out.resolve().parent.is_dir():
        raise InputError(f"the folder {out.resolve().parent} does not exist", path=str(out))


class ExportHandle(RunHandle):
    """A running export: the events of its worker; when they end, its job folder and any half-built OUT go."""

    def __init__(self, job_dir: Path, out: Path, process):
        super().__init__(None, None, job_dir, process)
        self.out = out

    def events(self, poll_s: float = 0.2) -> Iterator[Event]:
        try:
            yield from super().events(poll_s)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return  # still running (a caller stopped reading early): the job cleans up after itself
        shutil.rmtree(build_dir(self.out, self.pid), ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def prepare_export(config: ExportConfig) -> tuple[Path, ExportConfig]:
    """Check the request and write the job folder (``config.yaml`` with absolute paths, ``job.json``)."""
    check_request(config)
    config = config.replace(adapter=str(Path(config.adapter).expanduser().resolve()),
                            output=str(Path(config.output).expanduser().resolve()))
    job_dir = Path(tempfile.mkdtemp(prefix="rlhf-workbench-export-"))
    try:
        config.save(job_dir / CONFIG_FILE)
        (job_dir / JOB_FILE).write_text(json.dumps({"stage": "export", "run_id": None, "project": None}) + "\n",
                                        encoding="utf-8")
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return job_dir, config


def start_export(config: ExportConfig, *, python: str | None = None) -> ExportHandle:
    """Check the request, write a job folder and start the export worker."""
    job_dir, config = prepare_export(config)
    try:
        process = spawn_worker(python or sys.executable, job_dir)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return ExportHandle(job_dir, Path(config.output), process)
