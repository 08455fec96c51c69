"""``workbench train sft|rm|safety|ppo|dpo``, ``workbench generate``, ``workbench eval rm``, ``workbench eval
winrate`` and ``workbench eval round``: run a job (or a pipeline of jobs) headless.

Each command builds the stage's config (a ``--config`` YAML file, then the flags given), starts the worker through
the same :class:`~workbench.jobs.JobClient` the window uses, draws a progress bar on stderr while it runs, and
prints a one-line JSON summary as the last line on stdout (``run_id``, ``status``, ``output``, ``tokens_per_s``,
``peak_mem_mb``, ``metrics``; ``error`` when it failed; a generate run adds ``prompts``, ``responses`` and
``comparisons``). The exit code is 0 when the run finished, 1 when it failed, 130 when it was cancelled. Ctrl-C
asks the worker to stop (it checkpoints first); a second Ctrl-C kills it. ``--resume RUN_ID`` continues a cancelled
or failed run from its last checkpoint. :func:`config_from_args` turns a parsed command line into its config without
running anything.

Before a train run starts, :func:`check_fit` refuses an architecture the trainers cannot train (exit code 1) and
estimates the run's peak memory (:mod:`workbench.fit`): a run that would not fit in the device's free memory is
refused with exit code 3, its JSON summary carrying the estimate (``fit``) and the settings that would fit, unless
``--force``. ``--dry-run`` prints only the estimate as one JSON line (``estimate_mb``, ``parts_mb``, ``available_mb``,
``fits``, ``suggestions``) and exits 0 when it fits (or cannot be told), 3 when it does not; no run is created. A
finished run's summary carries its ``estimate_mb`` beside its measured ``peak_mem_mb``.

``workbench eval winrate PROJECT --reward-model DIR [--round ID]`` runs the ``score`` job (a reward model scores
both responses of every comparison of an evaluation round, the newest one by default) and prints, last, a JSON
summary of model A's automatic win rate against model B: ``wins``, ``losses``, ``ties``, ``n``, ``win_rate`` with
``win_rate_low``/``win_rate_high`` (95% Wilson interval), ``b_win_rate`` (the same from model B's side, as the
Evaluation page shows it), ``agree``/``judged`` (agreement with the expert's verdicts), ``model_a``, ``model_b``,
``reward_model`` and ``run_id``/``status`` (``error`` when it failed). A folder that is not a reward model is
refused before any run is created, so the project stays unchanged.

``workbench eval harm PROJECT [--safety-model DIR] [--base MODEL] [--adapter DIR] [--limit N]`` and ``workbench eval
refusal PROJECT [--base MODEL] [--adapter DIR] [--limit N]`` measure one model's harmful-output rate (the held-out
prompts, or a fixed-seed sample of the training prompts when none is held out, judged by the project's safety
classifier) and its over-refusal rate (XSTest's safe prompts); :mod:`workbench.safety_eval`. Each ends with one
JSON line: ``status``, ``rate``, ``interval`` (Wilson 95%), ``n``, ``k``, ``prompts`` (``heldout``,
``train-sample`` or ``xstest-safe``), ``model``, ``runs``; ``threshold`` for harm; ``error`` when it failed.

``workbench train ppo`` without ``--reward-model`` takes the newest finished reward-model run (and says which on
stderr; none: refused before a run is made). ``workbench generate PROJECT --next-round [--limit N]`` generates the
loop's next round (:mod:`workbench.next_round`).

``workbench eval round PROJECT [--model-a REF] [--adapter-a DIR] [--model-b REF] [--adapter-b DIR] [--limit N]``
runs a blind evaluation round (:mod:`workbench.eval_round`, the pipeline the Evaluation page runs): model A and
model B answer the held-out prompts (a progress bar per job), and one blind comparison per prompt is queued for the
Compare page. By default B is the newest finished SFT, DPO or PPO adapter and A its base model. The last line is a
JSON summary: ``status``, ``round_id``, ``pairs`` (queued), ``identical`` (both models gave the same answer),
``missing``, ``already``, ``prompts``, ``model_a``, ``model_b``, ``runs`` (the two generate runs); ``error`` when
it failed. Ctrl-C stops the running job (twice: kills it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .configs import ADVANTAGE_ESTIMATORS, DPO_LOSS_TYPES, DpoConfig, GenerateConfig, ModelConfig, PpoConfig, ScoreConfig, load_config
from .errors import WorkbenchError
from .fit import estimate as fit_estimate
from .jobs import JobClient, RunHandle
from .jobs.protocol import Event, EventType
from .run_report import fmt_duration
from .taxonomy import SPLITS

TRAIN_STAGES = ("sft", "rm", "safety", "ppo", "dpo")
# The exit code of a train command whose run would not fit in the device's memory (also of --dry-run).
FIT_EXIT_CODE = 3


# ---------------------------------------------------------------------------------------------- progress
class ProgressBar:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, one line per 10% otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 28):
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.metrics: dict[str, float] = {}
        self._last_decile = -1
        self._drawn = False

    def event(self, ev: Event) -> None:
        if ev.type == EventType.METRICS:
            self.metrics.update(ev.data)
        elif ev.type == EventType.PROGRESS and ev.step is not None:
            self._draw(ev.step, int(ev.data.get("total") or 0), ev.data)
        elif ev.type == EventType.LOG:
            level = ev.data.get("level", "info")
            self._line(f"{'' if level == 'info' else level + ': '}{ev.data.get('message', '')}")
        elif ev.type == EventType.CHECKPOINT:
            self._line(f"checkpoint at step {ev.step}{' (best so far)' if ev.data.get('best') else ''}")
        elif ev.type == EventType.ERROR:
            self._line(f"error: {ev.data.get('message', '')}")

    def _draw(self, step: int, total: int, data: dict[str, Any]) -> None:
        frac = step / total if total else 0.0
        filled = int(round(frac * self.width))
        loss = self.metrics.get("train/loss")
        parts = [f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{total}"]
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.4f}")
        if "eval/loss" in self.metrics:
            parts.append(f"eval {self.metrics['eval/loss']:.4f}")
        if data.get("tokens_per_s"):
            parts.append(f"{data['tokens_per_s']:.0f} tok/s")
        if data.get("eta_s") is not None and step < total:
            parts.append(f"eta {fmt_duration(float(data['eta_s']))}")
        text = "  ".join(parts)
        if self.tty:
            self.stream.write("\r" + text.ljust(100)[:160])
            self._drawn = True
        else:
            decile = int(frac * 10)
            if decile != self._last_decile or step == total:
                self._last_decile = decile
                self.stream.write(text + "\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.flush()


# ---------------------------------------------------------------------------------------------- running
def follow(handle: RunHandle, *, quiet: bool = False, cancel_timeout_s: float = 60.0) -> dict[str, Any]:
    """Drain a run's events with a progress bar; Ctrl-C cancels (twice: kills). Returns the JSON summary."""
    bar = ProgressBar() if not quiet else None
    events = handle.events()
    interrupted = 0
    while True:
        try:
            ev = next(events)
        except StopIteration:
            break
        except KeyboardInterrupt:
            interrupted += 1
            if interrupted == 1:
                sys.stderr.write("\ncancelling: the worker saves a checkpoint, then stops (Ctrl-C again to kill)\n")
                handle.cancel(cancel_timeout_s)
            else:
                handle.kill()
            continue
        if bar is not None:
            bar.event(ev)
    if bar is not None:
        bar.close()
    return summary(handle)


def summary(handle: RunHandle) -> dict[str, Any]:
    final = handle.final or {}
    inner = final.get("summary") or {}
    metrics = final.get("final_metrics") or dict(handle.last_metrics)
    out = {
        "run_id": handle.run_id,
        "status": handle.status or "failed",
        "output": final.get("output"),
        "tokens_per_s": inner.get("tokens_per_s", metrics.get("train/tokens_per_s")),
        "peak_mem_mb": inner.get("peak_mem_mb"),
        "metrics": metrics,
    }
    # Training runs report steps and times; generation runs what they added to the project.
    for key in ("steps", "train_s", "wall_s", "tokens", "estimate_mb", "prompts", "responses", "comparisons",
                "duplicates", "empty"):
        if key in inner:
            out[key] = inner[key]
    if handle.error:
        out["error"] = handle.error
    return out


def _exit_code(status: str) -> int:
    return {"done": 0, "cancelled": 130}.get(status, 1)


def config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The config a parsed ``train``/``generate``/``eval`` command line asks for (``--config`` file, then flags)."""
    stage, overrides = args.overrides(args)
    cfg = load_config(stage, args.config, **overrides)
    if cfg.num_threads is None:
        # Headless there is no window to keep a core free for: use them all (runs started from the window
        # leave one free). --threads or num_threads in the config file say otherwise.
        cfg = dataclasses.replace(cfg, num_threads=os.cpu_count() or 1)
    return cfg


def _prepared(args: argparse.Namespace, stage: str, cfg: ModelConfig) -> ModelConfig:
    """The config as the core completes it before a start: PPO without a reward model takes the newest finished
    reward-model run; ``generate --next-round`` chooses its model and prompts. What was chosen goes to stderr."""
    from .store import Project

    if stage == "ppo" and not getattr(cfg, "reward_model", None):
        from .run_choices import with_default_reward_model

        with Project.open(args.project) as project:
            cfg, note = with_default_reward_model(project, cfg)
        if note and not args.quiet:
            print(note, file=sys.stderr)
    elif stage == "generate" and getattr(args, "next_round", False):
        from .next_round import next_round_config, record_round

        defaults = GenerateConfig()
        given = {k: v for k, v in dataclasses.asdict(cfg).items()
                 if k not in ("name", "seed") and v != getattr(defaults, k)}
        with Project.open(args.project) as project:
            nxt = next_round_config(project, limit=args.limit, base_model=args.base, adapter=args.adapter,
                                    seed=args.seed, name=args.name, **given)
            record_round(project, nxt)
        if not args.quiet:
            print(nxt.description, file=sys.stderr)
        cfg = nxt.config
    return cfg


def _failed(error: str, **extra: Any) -> str:
    """The JSON summary of a run that was refused before it started."""
    return json.dumps({"run_id": None, "status": "failed", "output": None, "tokens_per_s": None, "peak_mem_mb": None,
                       "metrics": {}, "error": error, **extra}, ensure_ascii=False, default=str)


def check_fit(stage: str, cfg: ModelConfig, *, dry_run: bool, force: bool) -> int | None:
    """The memory check of a train command (:mod:`workbench.fit`): with ``dry_run``, print the estimate as one JSON
    line and return the exit code (0 fits or unknown, 3 does not fit); without, refuse a run that does not fit
    (exit code 3) unless ``force``; None: go on and start it."""
    from .model_files import model_refusal

    refusal = model_refusal(cfg.base_model)
    if refusal:
        raise WorkbenchError(f"base_model {cfg.base_model}: {refusal}")
    est = fit_estimate(stage, cfg)
    if dry_run:
        out = est.to_dict() if est is not None else {
            "stage": stage, "estimate_mb": None, "parts_mb": {}, "available_mb": None, "fits": None, "suggestions": [],
            "note": f"the files of {cfg.base_model} are not here yet (a hub id not in the local cache, or a GGUF file "
                    "no run has converted), so there is nothing to estimate from"}
        if est is not None:
            print(est.describe(), file=sys.stderr)
        print(json.dumps(out, ensure_ascii=False))
        return FIT_EXIT_CODE if est is not None and est.fits is False else 0
    if est is None or est.fits is not False:
        return None
    if force:
        print(f"warning: {est.describe()} Starting anyway (--force).", file=sys.stderr)
        return None
    message = f"{est.refusal()} Add --force to start it anyway."
    print(f"error: {message}", file=sys.stderr)
    print(_failed(message, fit=est.to_dict()))
    return FIT_EXIT_CODE


def _start(args: argparse.Namespace) -> int:
    client = JobClient(args.project)
    try:
        if getattr(args, "resume", None) is not None:
            handle = client.resume(args.resume)
        else:
            stage, _ = args.overrides(args)
            cfg = _prepared(args, stage, config_from_args(args))
            if stage in TRAIN_STAGES:
                code = check_fit(stage, cfg, dry_run=args.dry_run, force=args.force)
                if code is not None:
                    return code
            handle = client.start(stage, cfg)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        print(_failed(str(e)))
        return 1
    started = time.time()
    result = follow(handle, quiet=args.quiet)
    result.setdefault("wall_s", round(time.time() - started, 2))
    if result["status"] != "done" and result.get("error"):
        print(f"run {handle.run_id} {result['status']}: {result['error']}", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False, default=str))
    return _exit_code(result["status"])


# Each command's (stage, config overrides) from its flags; a flag left out is None and changes nothing.
def _train_overrides(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    overrides = dict(
        base_model=args.base, max_steps=args.max_steps, epochs=args.epochs, batch_size=args.batch_size,
        max_length=args.max_length, lora_r=args.lora_r, lr=args.lr, quantize=args.quantize,
        snapshot_id=args.snapshot, adapter_from=args.adapter_from, num_processes=args.num_processes,
        device=args.device, name=args.name, seed=args.seed, grad_accum=args.grad_accum,
        checkpoint_every=args.checkpoint_every, num_threads=args.threads, chat_template=args.chat_template,
    )
    if args.stage == "ppo":
        overrides.update(reward_model=args.reward_model, safety_model=args.safety_model,
                         safety_weight=args.safety_weight, samples_per_prompt=args.samples_per_prompt,
                         advantage_estimator=args.advantage)
    elif args.stage == "dpo":
        overrides.update(beta=args.beta, loss_type=args.loss_type)
    return args.stage, overrides


def _generate_overrides(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return "generate", dict(
        base_model=args.base, adapter_from=args.adapter, n_per_prompt=args.n, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_new_tokens, seed=args.seed,
        snapshot_id=args.snapshot, prompt_ids=args.prompts, tag=args.tag, split=args.split,
        batch_size=args.batch_size, device=args.device, quantize=args.quantize, name=args.name,
        chat_template=args.chat_template,
    )


def _eval_overrides(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return "eval", dict(base_model=args.base, adapter_from=args.adapter, snapshot_id=args.snapshot,
                        batch_size=args.batch_size, max_length=args.max_length, device=args.device, name=args.name,
                        chat_template=args.chat_template)


def _winrate_overrides(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    from .reward_scores import normal_path

    # Recorded absolute: the scores are looked up by the reward model's folder from anywhere later.
    return "score", dict(reward_model=normal_path(args.reward_model) if args.reward_model else None,
                         base_model=args.base, round_id=args.round, comparison_ids=args.comparisons,
                         batch_size=args.batch_size, max_length=args.max_length, device=args.device, name=args.name,
                         num_threads=args.threads, chat_template=args.chat_template)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def winrate_summary(handle: RunHandle | None, *, error: str | None = None) -> dict[str, Any]:
    """The JSON summary of ``eval winrate`` (see the module docstring)."""
    final = (handle.final or {}) if handle is not None else {}
    inner = final.get("summary") or {}
    out: dict[str, Any] = {"run_id": handle.run_id if handle is not None else None,
                           "status": (handle.status or "failed") if handle is not None else "failed"}
    for key in ("round_id", "model_a", "model_b", "reward_model", "reward_model_path", "wins", "losses", "ties",
                "n", "win_rate", "win_rate_low", "win_rate_high", "agree", "judged", "agreement", "responses",
                "scored", "unscored"):
        if key in inner:
            out[key] = _finite(inner[key])
    if out.get("win_rate") is not None:
        out["b_win_rate"] = 1 - out["win_rate"]
        out["b_win_rate_low"], out["b_win_rate_high"] = 1 - out["win_rate_high"], 1 - out["win_rate_low"]
    err = error or (handle.error if handle is not None else None)
    if err:
        out["error"] = err
    return out


def run_winrate(args: argparse.Namespace) -> int:
    """``workbench eval winrate``: score a round with a reward model and print the automatic win rate as JSON."""
    from .reward_scores import reward_model_problem

    problem = reward_model_problem(args.reward_model)
    if problem:
        msg = f"reward_model {args.reward_model}: {problem}"
        print(f"error: {msg}", file=sys.stderr)
        print(json.dumps(winrate_summary(None, error=msg)))
        return 1
    try:
        handle = JobClient(args.project).start("score", config_from_args(args))
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps(winrate_summary(None, error=str(e))))
        return 1
    follow(handle, quiet=args.quiet)
    result = winrate_summary(handle)
    if result["status"] != "done" and result.get("error"):
        print(f"run {handle.run_id} {result['status']}: {result['error']}", file=sys.stderr)
    elif result.get("win_rate") is not None:
        print(f"{result.get('model_b')} wins {result['b_win_rate']:.1%} (95% CI {result['b_win_rate_low']:.1%}–"
              f"{result['b_win_rate_high']:.1%}) against {result.get('model_a')} by {result.get('reward_model')}",
              file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False, default=str))
    return _exit_code(result["status"])


def run_eval_round(args: argparse.Namespace) -> int:
    """``workbench eval round``: a blind evaluation round, from generation to queued pairs."""
    from .eval_round import ModelAnswers, default_models, round_prompt_ids, run_round, start_round
    from .store import Project

    try:
        with Project.open(args.project) as project:
            a, b = default_models(project, model_a=args.model_a, adapter_a=args.adapter_a, model_b=args.model_b,
                                  adapter_b=args.adapter_b)
            rnd = start_round(project, a, b, round_prompt_ids(project, tag=args.tag, limit=args.limit))
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps({"status": "failed", "round_id": None, "pairs": 0, "error": str(e)}, ensure_ascii=False))
        return 1
    if not args.quiet:
        print(f"round {rnd.id}: {rnd.model_a.name} (A) vs {rnd.model_b.name} (B) on {len(rnd.prompt_ids)} held-out "
              "prompt(s)", file=sys.stderr)
    config = {"device": args.device} if args.device else {}
    answers = ModelAnswers(args.project, sampling=dict(temperature=args.temperature, max_new_tokens=args.max_new_tokens),
                           listener=None if args.quiet else _JobBars(), config=config)
    summary = _interruptible(lambda: run_round(answers, rnd), answers)
    if summary.status == "done":
        print(f"round {rnd.id}: {summary.pairs} blind pair(s) queued for the Compare page"
              + (f"; {summary.identical} prompt(s) got the same answer from both models" if summary.identical else "")
              + (f"; {summary.missing} without an answer from one model" if summary.missing else ""), file=sys.stderr)
    elif summary.error:
        print(f"round {rnd.id} {summary.status}: {summary.error}", file=sys.stderr)
    print(json.dumps(summary.to_dict(), ensure_ascii=False, default=str))
    return _exit_code(summary.status)


def _model_ref(project: Any, args: argparse.Namespace) -> Any:
    """The model a harm or refusal command measures: --base (+ --adapter); an adapter alone runs on the base its
    run recorded."""
    from .evaluation import ModelRef
    from .paths import BUNDLED_MODEL_REF
    from .run_choices import choice_for_folder

    base = args.base
    if base is None and args.adapter:
        choice = choice_for_folder(project, args.adapter, "adapter")
        base = choice.base_model if choice is not None else None
    return ModelRef(base or BUNDLED_MODEL_REF, args.adapter)


def _rate_command(args: argparse.Namespace, work: Callable[[Any, Any], Any], what: str) -> int:
    """Run a rate pipeline (``work(project, answers)`` → RateResult) with progress bars; print the JSON summary."""
    from .eval_round import ModelAnswers

    config = {"device": args.device} if args.device else {}
    answers = ModelAnswers(args.project, sampling=dict(temperature=args.temperature, max_new_tokens=args.max_new_tokens),
                           listener=None if args.quiet else _JobBars(), config=config)
    try:
        result = _interruptible(lambda: work(answers), answers)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps({"status": "failed", "rate": None, "interval": None, "n": 0, "prompts": None,
                          "error": str(e)}, ensure_ascii=False))
        return 1
    if result.status == "done":
        print(f"{result.model}: {result.text(what)}", file=sys.stderr)
    elif result.error:
        print(f"{result.status}: {result.error}", file=sys.stderr)
    print(json.dumps(result.to_dict(), ensure_ascii=False, default=str))
    return _exit_code(result.status)


def run_harm_command(args: argparse.Namespace) -> int:
    """``workbench eval harm``: the harmful-output rate of one model on the held-out prompts."""
    from .reward_scores import safety_model_problem
    from .run_choices import newest_choice
    from .safety_eval import harm_prompts, run_harm
    from .store import Project

    def work(answers: Any) -> Any:
        with Project.open(args.project) as project:
            ref = _model_ref(project, args)
            safety = args.safety_model
            if not safety:
                choice = newest_choice(project, "safety_model")
                if choice is None:
                    raise WorkbenchError("the project has no finished safety-classifier run: train one (`workbench "
                                         "train safety`) or give --safety-model DIR")
                safety = choice.folder
                if not args.quiet:
                    print(f"safety classifier: {choice.label} (the newest finished safety run)", file=sys.stderr)
            problem = safety_model_problem(safety)
            if problem:
                raise WorkbenchError(f"safety_model {safety}: {problem}")
            ids, kind = harm_prompts(project, args.limit)
        if not ids:
            raise WorkbenchError("the project has no prompts to answer")
        if not args.quiet:
            print(f"{ref.name} answers {len(ids)} {'held-out' if kind == 'heldout' else 'sampled training'} "
                  "prompt(s)", file=sys.stderr)
        settings = {"device": args.device} if args.device else {}
        return run_harm(answers, [("model", ref)], safety, ids, kind, score_settings=settings)["model"]

    return _rate_command(args, work, "harmful")


def run_refusal_command(args: argparse.Namespace) -> int:
    """``workbench eval refusal``: the over-refusal rate of one model on XSTest's safe prompts."""
    from .safety_eval import refusal_prompts, run_refusal
    from .store import Project

    def work(answers: Any) -> Any:
        with Project.open(args.project) as project:
            ref = _model_ref(project, args)
            ids = refusal_prompts(project, args.limit)
        return run_refusal(answers, ref, ids)

    return _rate_command(args, work, "refused")


class _JobBars:
    """A progress bar per job of a pipeline (a :class:`workbench.eval_round.PipelineListener`)."""

    def __init__(self) -> None:
        self.bar: ProgressBar | None = None

    def job_started(self, label: str, run_id: int, run_dir: Any) -> None:
        print(f"{label} (run {run_id})", file=sys.stderr)
        self.bar = ProgressBar()

    def event(self, label: str, ev: Event) -> None:
        if self.bar is not None:
            self.bar.event(ev)

    def job_finished(self, label: str, outcome: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _interruptible(work: Callable[[], Any], stopper: Any) -> Any:
    """Run ``work`` in a thread of its own so Ctrl-C reaches this one: the first asks ``stopper`` to cancel (the
    worker checkpoints, then stops), the second kills it. Returns what ``work`` returned (re-raises its error)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    interrupted = 0
    while thread.is_alive():
        try:
            thread.join(0.2)
        except KeyboardInterrupt:
            interrupted += 1
            if interrupted == 1:
                sys.stderr.write("\ncancelling: the worker stops after its current step (Ctrl-C again to kill)\n")
                stopper.cancel()
            else:
                stopper.kill()
    if "error" in box:
        raise box["error"]
    return box["result"]


# ---------------------------------------------------------------------------------------------- parsers
def _help(cls: type[ModelConfig], name: str) -> str:
    """A flag's help: the config field's own help text (percent signs escaped for argparse)."""
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name).replace("%", "%%")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", help="the project file")
    p.add_argument("--config", metavar="FILE", help="a YAML run config (flags given here override it)")
    p.add_argument("--base", metavar="MODEL", help="base model: hub id, local folder, GGUF file or bundled:…")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--name", help="a name for the run")
    p.add_argument("--chat-template", metavar="NAME|FILE", help=_help(ModelConfig, "chat_template"))
    p.add_argument("--quiet", action="store_true", help="no progress bar; only the JSON summary")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``generate`` and ``eval`` to the ``workbench`` command. Each handler returns an exit code."""
    train = subparsers.add_parser("train", help="train a model on the project's data (sft, rm, safety, ppo, dpo)")
    stages = train.add_subparsers(dest="stage", required=True, metavar="STAGE")
    helps = {"sft": "supervised fine-tuning on demonstrations", "rm": "a reward model on judged comparisons",
             "safety": "a safety classifier on flags", "ppo": "PPO against a reward model",
             "dpo": "direct preference optimisation on judged comparisons"}
    for stage in TRAIN_STAGES:
        p = stages.add_parser(stage, help=helps[stage])
        _common(p)
        p.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps")
        p.add_argument("--epochs", type=float, metavar="N", help="passes over the data")
        p.add_argument("--batch-size", type=int, metavar="N", help="examples per micro-batch")
        p.add_argument("--grad-accum", type=int, metavar="N", help="micro-batches per optimizer step")
        p.add_argument("--max-length", type=int, metavar="N", help="maximum tokens per example")
        p.add_argument("--lora-r", type=int, metavar="N", help="LoRA rank")
        p.add_argument("--lr", type=float, metavar="X", help="peak learning rate")
        p.add_argument("--quantize", choices=("auto", "4bit", "none"), help="4-bit NF4 base (QLoRA) or none")
        p.add_argument("--snapshot", type=int, metavar="ID", help="train on this snapshot (default: freeze one now)")
        p.add_argument("--adapter-from", metavar="DIR", help="continue from this LoRA adapter")
        p.add_argument("--num-processes", type=int, metavar="N", help="run under accelerate launch with N processes")
        p.add_argument("--checkpoint-every", type=int, metavar="N", help="checkpoint every N steps")
        p.add_argument("--seed", type=int, help="random seed")
        p.add_argument("--resume", type=int, metavar="RUN_ID", help="continue this run from its last checkpoint")
        p.add_argument("--dry-run", action="store_true",
                       help="print the run's memory estimate beside the device's free memory as one JSON line and "
                            "exit (0: it fits, 3: it does not); no run is created")
        p.add_argument("--force", action="store_true",
                       help="start the run even though its memory estimate exceeds the device's free memory")
        p.add_argument("--threads", type=int, metavar="N",
                       help="CPU threads for training (default here: all cores; runs started from the window leave one free)")
        if stage == "ppo":
            p.add_argument("--reward-model", metavar="DIR", help=_help(PpoConfig, "reward_model"))
            p.add_argument("--safety-model", metavar="DIR", help=_help(PpoConfig, "safety_model"))
            p.add_argument("--safety-weight", type=float, metavar="X", help=_help(PpoConfig, "safety_weight"))
            p.add_argument("--samples-per-prompt", type=int, metavar="N", help=_help(PpoConfig, "samples_per_prompt"))
            p.add_argument("--advantage", choices=ADVANTAGE_ESTIMATORS, help=_help(PpoConfig, "advantage_estimator"))
        elif stage == "dpo":
            p.add_argument("--beta", type=float, metavar="X", help=_help(DpoConfig, "beta"))
            p.add_argument("--loss-type", choices=DPO_LOSS_TYPES, help=_help(DpoConfig, "loss_type"))
        p.set_defaults(func=_start, overrides=_train_overrides)

    gen = subparsers.add_parser("generate", help="sample responses for prompts and queue them for comparison")
    _common(gen)
    gen.add_argument("--adapter", metavar="DIR", help="LoRA adapter on top of the base")
    gen.add_argument("--n", type=int, metavar="N", help="responses per prompt")
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--max-new-tokens", type=int, metavar="N")
    gen.add_argument("--batch-size", type=int, metavar="N")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--snapshot", type=int, metavar="ID", help="prompts of this snapshot")
    gen.add_argument("--prompts", type=int, nargs="+", metavar="ID", help="these prompt ids")
    gen.add_argument("--tag", help=_help(GenerateConfig, "tag"))
    gen.add_argument("--split", choices=SPLITS, help=_help(GenerateConfig, "split"))
    gen.add_argument("--quantize", choices=("auto", "4bit", "none"))
    gen.add_argument("--next-round", action="store_true",
                     help="the loop's next round: candidates from the newest tuned run (--base/--adapter name another "
                          "model) for training prompts with nothing pending, queued as pairs")
    gen.add_argument("--limit", type=int, metavar="N", help="with --next-round: at most N prompts (default 16)")
    gen.set_defaults(func=_start, overrides=_generate_overrides)

    ev = subparsers.add_parser("eval", help="evaluate a trained model")
    kinds = ev.add_subparsers(dest="eval_kind", required=True, metavar="KIND")
    rm = kinds.add_parser("rm", help="a reward model's pairwise accuracy on a snapshot")
    _common(rm)
    rm.add_argument("--adapter", metavar="DIR", help="the reward model's adapter folder")
    rm.add_argument("--snapshot", type=int, metavar="ID", help="comparisons to score (default: held-out ones)")
    rm.add_argument("--batch-size", type=int, metavar="N")
    rm.add_argument("--max-length", type=int, metavar="N")
    rm.set_defaults(func=_start, overrides=_eval_overrides)

    wr = kinds.add_parser("winrate", help="automatic win rate of an evaluation round, judged by a reward model")
    _common(wr)
    wr.add_argument("--reward-model", required=True, metavar="DIR", help=_help(ScoreConfig, "reward_model"))
    wr.add_argument("--round", type=int, metavar="ID", help=_help(ScoreConfig, "round_id"))
    wr.add_argument("--comparisons", type=int, nargs="+", metavar="ID", help=_help(ScoreConfig, "comparison_ids"))
    wr.add_argument("--batch-size", type=int, metavar="N", help=_help(ScoreConfig, "batch_size"))
    wr.add_argument("--max-length", type=int, metavar="N", help=_help(ScoreConfig, "max_length"))
    wr.add_argument("--threads", type=int, metavar="N", help="CPU threads (default here: all cores)")
    wr.set_defaults(func=run_winrate, overrides=_winrate_overrides)

    from .eval_round import SAMPLINGS

    rd = kinds.add_parser("round", help="a blind evaluation round: both models answer the held-out prompts, the "
                                        "pairs are queued for blind judging")
    rd.add_argument("project", help="the project file")
    rd.add_argument("--model-a", metavar="REF", help="model A's base: hub id, folder, GGUF file or bundled:… "
                                                     "(default: model B's base)")
    rd.add_argument("--adapter-a", metavar="DIR", help="a LoRA adapter on model A (default: none)")
    rd.add_argument("--model-b", metavar="REF", help="model B's base (default: the newest tuned run's)")
    rd.add_argument("--adapter-b", metavar="DIR", help="a LoRA adapter on model B (default: the newest finished "
                                                       "SFT, DPO or PPO run's)")
    rd.add_argument("--limit", type=int, metavar="N", help="at most N held-out prompts (the first by id)")
    rd.add_argument("--tag", help="only held-out prompts with this tag (default: all but XSTest's)")
    rd.add_argument("--temperature", type=float, default=SAMPLINGS[0][1]["temperature"],
                    help=_help(GenerateConfig, "temperature"))
    rd.add_argument("--max-new-tokens", type=int, metavar="N", default=SAMPLINGS[0][1]["max_new_tokens"],
                    help=_help(GenerateConfig, "max_new_tokens"))
    rd.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    rd.add_argument("--quiet", action="store_true", help="no progress bars; only the JSON summary")
    rd.set_defaults(func=run_eval_round)

    hm = kinds.add_parser("harm", help="harmful-output rate: the model answers the held-out prompts, the project's "
                                       "safety classifier judges each answer")
    hm.add_argument("project", help="the project file")
    hm.add_argument("--safety-model", metavar="DIR", help="the safety classifier (a safety run's adapter folder; "
                                                          "default: the newest finished safety run's)")
    _model_flags(hm)
    hm.set_defaults(func=run_harm_command)

    rf = kinds.add_parser("refusal", help="over-refusal rate on XSTest's safe prompts")
    rf.add_argument("project", help="the project file")
    _model_flags(rf)
    rf.set_defaults(func=run_refusal_command)


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", metavar="MODEL", help="base model: hub id, folder, GGUF file or bundled:… (default: the "
                                                   "bundled model, or the adapter's base)")
    p.add_argument("--adapter", metavar="DIR", help="a LoRA adapter on the base (default: none, the base alone)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N prompts")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", default=128, help=_help(GenerateConfig, "max_new_tokens"))
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars; only the JSON summary")
