"""The blind evaluation round as one pipeline, shared by ``workbench eval round`` and the Evaluation page: model A
answers the held-out prompts (a ``generate`` job, nothing queued by it), model B answers them (a second job), and
one blind comparison per prompt is queued between the two answers (``kind='eval'``, never trained on; see
:mod:`workbench.evaluation`). Qt-free: jobs run through :class:`~workbench.jobs.client.JobClient`, one after
another, and whoever drives the pipeline hears of each job and each worker event through a
:class:`PipelineListener` (the CLI draws progress bars, the window re-emits Qt signals).

A pipeline runs in a thread of its own (the CLI's, or the window's QThread); :meth:`ModelAnswers.cancel` and
:meth:`ModelAnswers.detach` may be called from any other thread: cancel asks the running worker to stop (it
checkpoints first) and starts nothing more; detach lets the worker go on in the background and stops following it.

**Which models.** :func:`default_models`: B is the newest finished tuned run of the project (an SFT, DPO or PPO
adapter), A its base model without the adapter. Without a tuned run there is no default B, and A and B may never be
the same model (:func:`workbench.evaluation.new_round` refuses them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import GenerateConfig, ModelConfig
from .errors import WorkbenchError
from .evaluation import XSTEST_TAG, EvalRound, ModelRef, get_round, new_round, pair_round, save_round
from .jobs.client import JobClient, Outcome, RunHandle
from .jobs.protocol import Event
from .paths import BUNDLED_MODEL_REF
from .store import Project
from .train_checks import STAGES, done_runs

# Stages whose output is a tuned policy adapter, in the order their runs are looked at.
TUNED_STAGES = ("sft", "dpo", "ppo")
# How the models answer, as the Evaluation page offers it (the first is the default everywhere).
SAMPLINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("temperature 0.7, up to 256 tokens", dict(temperature=0.7, max_new_tokens=256)),
    ("greedy, up to 256 tokens", dict(temperature=0.0, max_new_tokens=256)),
    ("temperature 0.7, up to 64 tokens (quick)", dict(temperature=0.7, max_new_tokens=64)),
)
ROUND_SEED = 1234


# ---------------------------------------------------------------------------------------------- choosing
def round_prompt_ids(project: Project, *, tag: str | None = None, limit: int | None = None) -> list[int]:
    """The held-out prompts a round uses, in id order: those with ``tag``, else every held-out prompt except
    XSTest's (those are for the over-refusal check); the first ``limit`` of them."""
    ids = project.prompt_ids(split="heldout", tag=tag)
    if tag is None:
        xstest = set(project.prompt_ids(split="heldout", tag=XSTEST_TAG))
        ids = [i for i in ids if i not in xstest]
    return ids[:limit] if limit is not None else ids


def newest_tuned_run(project: Project) -> dict[str, Any] | None:
    """The newest finished SFT, DPO or PPO run with an adapter on disk (its ``adapter`` key names the folder)."""
    runs = [r for stage in TUNED_STAGES for r in done_runs(project, stage)]
    return max(runs, key=lambda r: r["id"], default=None)


def tuned_label(run: Mapping[str, Any]) -> str:
    return f"run {run['id']} · {STAGES.get(run['stage'], run['stage'])}" + (f" {run['name']}" if run.get("name") else "")


def default_models(
    project: Project,
    *,
    model_a: str | None = None,
    adapter_a: str | None = None,
    model_b: str | None = None,
    adapter_b: str | None = None,
) -> tuple[ModelRef, ModelRef]:
    """Model A and model B of a round: what is given, else B = the newest tuned run and A = B's base model. A
    model given without a base runs on the other model's base (the bundled model when neither names one)."""
    if model_b is None and adapter_b is None:
        tuned = newest_tuned_run(project)
        if tuned is None:
            raise WorkbenchError(
                "no tuned model to compare: the project has no finished SFT, DPO or PPO run with an adapter, and "
                "model A and model B must differ; train one, or name model B (--model-b, --adapter-b)"
            )
        b = ModelRef(tuned["base_model"] or BUNDLED_MODEL_REF, tuned["adapter"], tuned_label(tuned))
    else:
        b = ModelRef(model_b or model_a or BUNDLED_MODEL_REF, adapter_b)
    a = ModelRef(model_a or b.base, adapter_a)
    if a.matches(b.base, b.adapter):
        raise WorkbenchError(f"model A and model B are the same model ({b.name}): pick two different models to compare")
    return a, b


def sampling_config(sampling: Mapping[str, Any] | None) -> dict[str, Any]:
    """Generation settings of a round (the first of :data:`SAMPLINGS` unless given)."""
    return dict(SAMPLINGS[0][1] if sampling is None else sampling)


# ---------------------------------------------------------------------------------------------- running
class PipelineListener:
    """What a pipeline reports as it goes. Every method runs in the pipeline's thread; the defaults do nothing."""

    def job_started(self, label: str, run_id: int, run_dir: Path) -> None:
        """A job of the pipeline started (``label``: e.g. ``model A``)."""

    def event(self, label: str, ev: Event) -> None:
        """One event of the running job's worker (progress, metrics, log, ...)."""

    def job_finished(self, label: str, outcome: Outcome) -> None:
        """The job ended (done, failed, cancelled or detached)."""


class ModelAnswers:
    """Generation jobs run one after another (one answer per prompt per model, nothing queued), with cancel and
    detach from any thread. :func:`run_round` and the over-refusal check are built on it."""

    def __init__(
        self,
        project_path: str | Path,
        *,
        sampling: Mapping[str, Any] | None = None,
        listener: PipelineListener | None = None,
        python: str | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        self.project_path = Path(project_path)
        self.sampling = sampling_config(sampling)
        self.listener = listener or PipelineListener()
        self.client = JobClient(self.project_path, python=python)
        self.config = dict(config or {})  # further GenerateConfig fields (device, num_threads, ...)
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._handle: RunHandle | None = None
        self._stopping: str | None = None  # "cancelled" | "detached"

    @property
    def stopped(self) -> str | None:
        """``cancelled`` or ``detached`` once asked to stop; None while it may go on."""
        return self._stopping

    def generate(
        self, ref: ModelRef, prompt_ids: Sequence[int], label: str, *, on_run: Callable[[int], None] | None = None
    ) -> Outcome:
        """One answer per prompt from ``ref`` (a ``generate`` job), followed to its end."""
        cfg = GenerateConfig(
            base_model=ref.base, adapter_from=ref.adapter, prompt_ids=list(prompt_ids), n_per_prompt=1,
            queue_comparisons=False, seed=ROUND_SEED, name=f"eval {label}", **self.sampling, **self.config,
        )
        return self.run_job("generate", cfg, label, on_run=on_run)

    def run_job(
        self, stage: str, cfg: ModelConfig, label: str, *, on_run: Callable[[int], None] | None = None
    ) -> Outcome:
        """Any job of the pipeline (a generation, a scoring), followed to its end; nothing starts once stopped."""
        if self._stopping:
            return Outcome(None, self._stopping)
        try:
            handle = self.client.start(stage, cfg)
        except WorkbenchError as e:
            outcome = Outcome(None, "failed", error=str(e))
            self.outcomes.append(outcome)
            self.listener.job_finished(label, outcome)
            return outcome
        with self._lock:
            self._handle = handle
            stopping = self._stopping
        if stopping == "cancelled":
            handle.cancel()
        elif stopping == "detached":
            handle.detach()
        if on_run is not None:
            on_run(handle.run_id)
        self.listener.job_started(label, handle.run_id, handle.run_dir)
        try:
            for ev in handle.events(poll_s=0.1):
                self.listener.event(label, ev)
        finally:
            with self._lock:
                self._handle = None
        outcome = handle.outcome()
        self.outcomes.append(outcome)
        self.listener.job_finished(label, outcome)
        return outcome

    def cancel(self, timeout_s: float = 60.0) -> None:
        """Stop: the running worker checkpoints and ends (hard kill after ``timeout_s``); nothing more starts."""
        with self._lock:
            self._stopping = self._stopping or "cancelled"
            handle = self._handle
        if handle is not None:
            handle.cancel(timeout_s)

    def kill(self) -> None:
        """Kill the running worker at once; nothing more starts."""
        with self._lock:
            self._stopping = self._stopping or "cancelled"
            handle = self._handle
        if handle is not None:
            handle.kill()

    def detach(self) -> None:
        """Stop following: the running worker goes on in the background; nothing more starts."""
        with self._lock:
            self._stopping = "detached"
            handle = self._handle
        if handle is not None:
            handle.detach()


@dataclass
class RoundSummary:
    """How a round went: ``status`` is done, failed, cancelled or detached; the counts come from pairing."""

    status: str
    round_id: int
    model_a: str
    model_b: str
    prompts: int
    pairs: int = 0
    identical: int = 0
    missing: int = 0
    already: int = 0
    runs: list[int] = field(default_factory=list)
    error: str | None = None
    log_tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"status": self.status, "round_id": self.round_id, "pairs": self.pairs, "identical": self.identical,
               "missing": self.missing, "already": self.already, "prompts": self.prompts, "model_a": self.model_a,
               "model_b": self.model_b, "runs": list(self.runs)}
        if self.error:
            out["error"] = self.error
        return out


def start_round(project: Project, model_a: ModelRef, model_b: ModelRef, prompt_ids: Sequence[int]) -> EvalRound:
    """Record a new round (in the caller's thread, so bad input is refused before any job starts)."""
    if not prompt_ids:
        raise WorkbenchError("no held-out prompts to evaluate on: mark some prompts as held out (they are never "
                             "trained on), or pick another tag")
    return new_round(project, model_a, model_b, list(prompt_ids))


def answer_in_turn(
    answers: ModelAnswers, models: Sequence[tuple[str, ModelRef]], prompt_ids: Sequence[int],
    *, on_run: Callable[[int], None] | None = None,
) -> Outcome:
    """Each (label, model) answers the prompts in turn; stops at the first job that does not finish. Returns the
    last job's outcome (done when every model answered)."""
    outcome = Outcome(None, "done")
    for label, ref in models:
        outcome = answers.generate(ref, prompt_ids, label, on_run=on_run)
        if not outcome.ok:
            break
    return outcome


def run_round(answers: ModelAnswers, rnd: EvalRound) -> RoundSummary:
    """Generate with model A, then model B, on the round's prompts, then queue the blind pairs (the pipeline's
    thread; its own connections to the project)."""
    summary = RoundSummary("done", rnd.id, rnd.model_a.name, rnd.model_b.name, len(rnd.prompt_ids))

    def note_run(run_id: int) -> None:
        summary.runs.append(run_id)
        with Project.open(answers.project_path) as project:
            current = get_round(project, rnd.id)
            current.runs.append(run_id)
            save_round(project, current)

    outcome = answer_in_turn(answers, (("model A", rnd.model_a), ("model B", rnd.model_b)), rnd.prompt_ids,
                             on_run=note_run)
    if not outcome.ok:
        summary.status = outcome.status
        summary.error = outcome.error if outcome.status == "failed" else None
        summary.log_tail = outcome.log_tail
        return summary
    with Project.open(answers.project_path) as project:
        counts = pair_round(project, get_round(project, rnd.id))
    summary.pairs, summary.identical = counts["queued"], counts["identical"]
    summary.missing, summary.already = counts["missing"], counts["already"]
    return summary
