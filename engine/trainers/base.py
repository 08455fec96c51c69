"""The training skeleton every stage runs in: :class:`TrainingRun` owns a run from its snapshot to its model card;
a stage (SFT, reward model, safety classifier, DPO, PPO) supplies only what is its own.

What :meth:`TrainingRun.run` does, in order:

1. seeds torch; checks the stage's inputs (:meth:`~TrainingRun.check_inputs`); picks the device: an
   ``accelerate.Accelerator`` for a stage that runs under ``accelerate launch`` with several processes
   (``distributed``), else the config's device (and a refusal of several processes). The thread count is the
   worker's, which sets it for every job;
2. builds the stage's model (:meth:`~TrainingRun.build_model`), checks that the stage computes what that model
   itself computes (:func:`engine.families.check_trainable` on :meth:`~TrainingRun.family_model`: a refusal names
   the architecture; the run log says once what the packed layouts honour for it) and, when the config asks,
   switches gradient checkpointing on for it: the one place that happens;
3. freezes the data snapshot, or checks the one the config names: the main process makes a new one inside one
   transaction with the size check, so a snapshot too small to train on (or a model that fails to load, step 2)
   leaves the project untouched; every process then reads the snapshot id from the run folder;
4. reads the examples (:meth:`~TrainingRun.load_data`), holds out a seeded share of the prompts for evaluation
   (:func:`split_by_prompt`) and refuses to train on fewer than ``min_examples``;
5. AdamW over the stage's parameters (:meth:`~TrainingRun.param_groups`) and a warm-up + cosine schedule, prepared
   with the stage's ``module`` by the accelerator; then the stage's own preparation (:meth:`~TrainingRun.prepare`:
   DPO's reference pass, PPO's experience maker), which may stop the run before its first step
   (:class:`CancelledBeforeTraining`);
6. the data order (:meth:`~TrainingRun.make_order`) and, when resuming, the last checkpoint: weights
   (:meth:`~TrainingRun.load_weights`), optimizer, scheduler, RNG states, data order and the stage's own state
   (:meth:`~TrainingRun.restore_extra_state`), so the run continues exactly where it stopped;
7. the step loop. A step takes the next ``examples_per_step`` indices and runs :meth:`~TrainingRun.train_step`,
   which by default accumulates the gradients of this process's micro-batches (:meth:`~TrainingRun.accumulate`,
   with :meth:`~TrainingRun.micro_batches` and :meth:`~TrainingRun.backward`), clips, steps the optimizer and turns
   the sums of every process into metrics (:meth:`~TrainingRun.train_metrics`); then the scheduler steps, freed memory
   goes back to the system every few steps, the loss is checked to be finite, the step's metrics (the stage's plus
   ``train/lr``, ``train/epoch``, ``train/tokens``, tokens/s and ``perf/peak_mem_mb``) are streamed every
   ``log_every`` steps and a ``progress`` event goes out. On their cadence come an evaluation
   (:meth:`~TrainingRun.evaluate`, every ``eval_every`` steps and at each checkpoint), a checkpoint (every
   ``checkpoint_every`` steps; the last ``keep_checkpoints`` and the best by ``best_metric`` are kept) and, when a
   cancel was asked for, a checkpoint and the end of the run;
8. a last evaluation, the output folder (:meth:`~TrainingRun.save_weights`, the tokenizer, ``config.yaml`` and a
   model card) and the summary (tokens, train_s, steps, total_steps, tokens_per_s, peak_mem_mb, the memory estimate
   ``estimate_mb`` (:mod:`workbench.fit`, also logged at the start) and :meth:`~TrainingRun.summary_extras`); the
   final metrics carry ``memory/peak_mb`` and ``memory/estimate_mb`` too, so every run records both.

Adding a stage: subclass :class:`TrainingRun`; set its wording (``title``, ``who``, ``unit``, ``snapshot_unit``,
``hint``, ``card_*``) and ``snapshot_kind``; implement :meth:`~TrainingRun.build_model` (it sets ``tokenizer``,
``module``, ``lm`` and, for a HeadedModel, ``hm``), :meth:`~TrainingRun.new_snapshot`,
:meth:`~TrainingRun.count_examples`, :meth:`~TrainingRun.load_data`, :meth:`~TrainingRun.accumulate`,
:meth:`~TrainingRun.train_metrics` and, when it holds examples out, :meth:`~TrainingRun.evaluate`; override the
other hooks only where their defaults do not fit (:mod:`engine.trainers.sft` is the smallest example). Then add
``def run(ctx): return MyRun(ctx).run()`` to its module and a row to ``engine.jobs.JOBS``. A stage whose step is
not gradient accumulation over examples overrides :meth:`~TrainingRun.train_step` whole (PPO: a step is a rollout
and its PPO epochs).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.store import Project

from .. import checkpoints as ckpt
from ..devices import peak_mem_mb, resolve_device
from ..families import check_trainable
from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from ..lora import enable_gradient_checkpointing
from ..reward_model import HeadedModel
from ..training import (
    ADAPTER, RELEASE_EVERY, DataOrder, check_finite, make_accelerator, release_free_memory, warmup_cosine,
)

SNAPSHOT_FILE = "snapshot_id"
PEFT_USAGE = ("from peft import PeftModel", "model = PeftModel.from_pretrained(base_model, 'path/to/this/folder')")


class CancelledBeforeTraining(Exception):
    """A stage's preparation saw the run cancelled before its first step (so there is no checkpoint); the message
    says how far it got."""


def split_by_prompt(prompt_ids: Sequence[int], fraction: float, seed: int, min_train: int) -> set[int]:
    """Prompt ids held out for evaluation: a seeded choice of about ``fraction`` of the prompts (at least one once
    there are ten), never leaving fewer than ``min_train`` training examples."""
    unique = sorted(set(prompt_ids))
    n_eval = int(round(len(unique) * fraction))
    if fraction > 0 and n_eval == 0 and len(unique) >= 10:
        n_eval = 1
    random.Random(seed).shuffle(unique)
    counts: dict[int, int] = {}
    for pid in prompt_ids:
        counts[pid] = counts.get(pid, 0) + 1
    held: set[int] = set()
    remaining = len(prompt_ids)
    for pid in unique[:n_eval]:
        if remaining - counts[pid] < min_train:
            break
        held.add(pid)
        remaining -= counts[pid]
    return held


def check_adapter_folders(*settings: tuple[str, str | None]) -> None:
    """Each (config field, value) that is set names a saved LoRA adapter folder; else a :class:`JobError` naming
    the field and what is wrong."""
    from ..lora import check_adapter_folder
    from ..model_errors import ModelError

    for field_name, path in settings:
        if path:
            try:
                check_adapter_folder(path)
            except ModelError as e:
                raise JobError(f"{field_name}: {e}") from e


class _WeightsWriter:
    """What :func:`engine.checkpoints.save_checkpoint` calls ``save_pretrained`` on: the stage's weights writer."""

    def __init__(self, run: "TrainingRun"):
        self.run = run

    def save_pretrained(self, folder: Path) -> None:
        self.run.save_weights(Path(folder))


class TrainingRun:
    """One training run of a stage in a run folder (see the module docstring for the loop and the hooks)."""

    # ---- what a stage declares
    title = ""  # the stage in messages and logs: "SFT", "reward model"
    who = ""  # who needs the data, in messages: "training", "DPO", "a reward model"
    unit = "example"  # one training example, in messages: "example", "pair", "text", "prompt"
    snapshot_unit = ""  # what a snapshot is counted in: "SFT example(s)", "judged preference pair(s)"
    hint = ""  # what the user can do about too little data
    snapshot_kind: str | None = None  # the kind a snapshot named in the config must be (None: any)
    distributed = True  # runs under ``accelerate launch`` with several processes
    holds_out = True  # splits prompts off for evaluation (``eval_fraction``)
    best_metric = "eval/loss"  # the best checkpoint's measure; train/loss until there is an evaluation
    higher_is_better = False
    checkpoint_metrics = "eval/"  # prefix of the metrics reported with a checkpoint
    loss_name = "training loss"  # in the message when the loss stops being finite
    tokens_per_s_key = "train/tokens_per_s"
    release_every: int | None = RELEASE_EVERY  # steps between memory releases (None: the stage does its own)
    card_title = ""  # the model card's heading: "SFT adapter"
    card_tag = ""  # the model card's tag: "sft"
    card_usage: Sequence[str] = PEFT_USAGE  # how to load the output, as Python lines

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.cfg: Any = ctx.config
        self.accelerator: Any = None
        self.device = torch.device("cpu")
        self.world, self.rank = 1, 0
        # Set by build_model: the tokenizer; the module the loss runs through (prepared with the optimizer by the
        # accelerator, switched between train() and eval()); the causal LM under the adapters (gradient
        # checkpointing); the HeadedModel whose adapter ``adapter_name`` is trained, when the stage has one.
        self.tokenizer: Any = None
        self.module: nn.Module | None = None
        self.lm: nn.Module | None = None
        self.hm: HeadedModel | None = None
        self.adapter_name = ADAPTER
        self.snapshot_id = 0
        self.train_examples: list[Any] = []
        self.eval_examples: list[Any] = []
        self.per_step = 0
        self.total_steps = 0
        self.step, self.tokens, self.train_time = 0, 0, 0.0
        self.best = -math.inf if self.higher_is_better else math.inf
        self.last_metrics: dict[str, Any] = {}
        self.estimate_mb: float | None = None

    # ================================================================== the run
    def run(self) -> JobResult:
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.seed)
        if ctx.project_path is None:
            raise JobError(f"{self.title} needs a project to take its data from")
        self.check_inputs()
        self._choose_device()
        self.build_model()
        self._check_family()
        self._estimate_memory()
        if cfg.gradient_checkpointing and self.lm is not None:
            enable_gradient_checkpointing(self.lm)
        self.snapshot_id = self._snapshot()
        self._read_data()
        self.per_step = self.examples_per_step()
        steps_per_epoch = max(1, math.ceil(len(self.train_examples) / self.per_step))
        self.total_steps = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))
        self._make_optimizer()
        try:
            self.prepare()
        except CancelledBeforeTraining as stopped:
            ctx.log(str(stopped))
            return self._result("cancelled", None)
        self.order = self.make_order()
        if ctx.resume:
            self._resume()
        ctx.log(self.describe())
        self.on_train_start()
        return self._loop()

    def _choose_device(self) -> None:
        if self.distributed:
            self.accelerator = make_accelerator(self.cfg)
            self.device = self.accelerator.device
            self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        elif self.ctx.world_size > 1:
            raise JobError(f"{self.title} runs in a single process in this version (set num_processes: 1)")
        else:
            self.device = resolve_device(self.cfg.device)

    def _check_family(self) -> None:
        """Refuse a model the stage would compute differently from the model itself (before the snapshot is frozen:
        the project stays as it was); say once in the log what the packed layouts honour for it."""
        lm = self.family_model()
        if lm is not None:
            self.ctx.log(check_trainable(lm))

    def _estimate_memory(self) -> None:
        """The run's memory estimate (:mod:`workbench.fit`) into the log now, and beside the measured peak in the
        final metrics and the summary at the end."""
        from workbench.fit import estimate

        est = estimate(self.ctx.stage, self.cfg)
        self.estimate_mb = est.estimate_mb if est is not None else None
        if est is not None:
            parts = ", ".join(f"{k} {v:.0f}" for k, v in est.parts.items() if v >= 0.5)
            self.ctx.log(f"memory estimate: {est.describe()} Parts (MB): {parts}")

    def _snapshot(self) -> int:
        """The snapshot to train on; the main process freezes or checks it, every process reads it back."""
        if self.ctx.is_main:
            sid = self._freeze_or_check_snapshot()
            (self.ctx.run_dir / SNAPSHOT_FILE).write_text(str(sid))
        self.wait()
        return int((self.ctx.run_dir / SNAPSHOT_FILE).read_text())

    def _freeze_or_check_snapshot(self) -> int:
        cfg, project = self.cfg, self.ctx.project()
        assert project is not None
        needs = f"{self.who} needs at least {cfg.min_examples} ({self.hint})"
        if cfg.snapshot_id is not None:
            if self.snapshot_kind is not None:
                from workbench.training_data import snapshot_options

                snapshot_options(project, cfg.snapshot_id, self.snapshot_kind)
            n = self.count_examples(project, cfg.snapshot_id)
            if n < cfg.min_examples:
                raise JobError(f"snapshot {cfg.snapshot_id} holds {n} {self.snapshot_unit}; {needs}")
            return cfg.snapshot_id
        with project.transaction():
            sid = self.new_snapshot(project, f"{self.ctx.stage} run {self.ctx.run_id}")
            n = self.count_examples(project, sid)
            if n < cfg.min_examples:
                # Raising inside the transaction rolls the new snapshot back: nothing in the project changes.
                raise JobError(f"the project has {n} {self.snapshot_unit}; {needs}")
            if self.ctx.run_id is not None:
                project.update_run(self.ctx.run_id, snapshot_id=sid)
        return sid

    def _read_data(self) -> None:
        cfg = self.cfg
        with Project.open(self.ctx.project_path, migrate=False) as project:
            examples, prompt_ids = self.load_data(project, self.snapshot_id)
        held = split_by_prompt(prompt_ids, cfg.eval_fraction, cfg.seed, cfg.min_examples) if self.holds_out else set()
        self.train_examples = [e for e, p in zip(examples, prompt_ids) if p not in held]
        self.eval_examples = [e for e, p in zip(examples, prompt_ids) if p in held]
        if len(self.train_examples) < cfg.min_examples:
            raise JobError(f"snapshot {self.snapshot_id}: only {len(self.train_examples)} usable training "
                           f"{self.unit}(s); {self.who} needs at least {cfg.min_examples}")

    def _make_optimizer(self) -> None:
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = warmup_cosine(self.optimizer, self.total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
        if self.accelerator is not None and self.module is not None:
            # (a stage without a module, PPO, synchronises its gradients itself)
            self.module, self.optimizer = self.accelerator.prepare(self.module, self.optimizer)

    def _resume(self) -> None:
        # A worker killed while writing a checkpoint leaves its temporary folder: never a checkpoint, always garbage.
        for partial in ckpt.remove_partial_checkpoints(self.ctx.checkpoint_dir):
            self.ctx.log(f"removed {partial.name}, a checkpoint whose writing was interrupted")
        path = ckpt.latest_checkpoint(self.ctx.checkpoint_dir)
        if path is None:
            raise JobError(f"nothing to resume: no checkpoint in {self.ctx.checkpoint_dir}")
        self.load_weights(path)
        state, tensors = ckpt.load_checkpoint(path, optimizer=self.optimizer, scheduler=self.scheduler)
        if "stage" not in state:
            raise JobError(f"{path}: this checkpoint was written by an earlier version of the engine, which kept "
                           "its state in another form; start a new run")
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.train_time, self.best = float(state["train_time"]), float(state["best"])
        self.order.restore(state["data_order"])
        self.restore_extra_state(state["stage"], tensors)
        self.ctx.log(f"resumed from {path.name} at step {self.step}")

    def _loop(self) -> JobResult:
        cfg, ctx = self.cfg, self.ctx
        eval_every = cfg.eval_every or cfg.checkpoint_every
        self.train_mode()
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            indices = self.order.take(self.per_step)
            lr = self.scheduler.get_last_lr()[0]
            metrics, tokens = self.train_step(indices)
            self.scheduler.step()
            self.step += 1
            if self.release_every:
                release_free_memory(self.step, self.release_every)
            check_finite(metrics["train/loss"], self.step, self.loss_name)
            self.tokens += tokens
            self.train_time += time.perf_counter() - t0
            tokens_per_s = self.tokens / self.train_time if self.train_time > 0 else 0.0
            metrics.update({"train/lr": lr, "train/epoch": self.order.epoch, self.tokens_per_s_key: tokens_per_s,
                            "train/tokens": float(self.tokens), "perf/peak_mem_mb": peak_mem_mb()})
            self.last_metrics.update(metrics)
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                ctx.metrics(self.step, metrics)
            ctx.progress(self.step, self.total_steps, epoch=round(self.order.epoch, 4), tokens=self.tokens,
                         tokens_per_s=round(tokens_per_s, 1),
                         eta_s=round((self.total_steps - self.step) * self.train_time / self.step, 1),
                         **self.progress_extras(metrics))

            # every process asks, so all stop at the same step
            stop = ctx.should_stop(self.accelerator) and self.step < self.total_steps
            before_end = self.step < self.total_steps
            at_checkpoint = bool(cfg.checkpoint_every) and self.step % cfg.checkpoint_every == 0 and before_end
            if at_checkpoint or (eval_every and self.step % eval_every == 0 and before_end):
                self._evaluate()
            if at_checkpoint or stop:
                self._save_checkpoint()
            if stop:
                ctx.log(f"cancelled at step {self.step}; checkpoint saved")
                return self._result("cancelled", None)

        self._evaluate()
        output = ctx.output_dir
        if ctx.is_main:
            self._write_output(output)
        self.wait()
        return self._result("done", str(output))

    def _evaluate(self) -> None:
        if not self.has_evaluation():
            return
        values = self.evaluate()
        self.last_metrics.update(values)
        if values:
            self.ctx.metrics(self.step, values)
        self.train_mode()

    def _save_checkpoint(self) -> None:
        """A checkpoint of this step (main process), the best one marked, old ones pruned."""
        name = self.best_metric if self.best_metric in self.last_metrics else "train/loss"
        value = float(self.last_metrics[name])
        is_best = value > self.best if self.higher_is_better else value < self.best
        if is_best:
            self.best = value
        if self.ctx.is_main:
            stage_state, tensors = self.extra_state()
            state = {"tokens": self.tokens, "train_time": self.train_time, "best": self.best,
                     "data_order": self.order.state(), "total_steps": self.total_steps,
                     "snapshot_id": self.snapshot_id, "stage": stage_state}
            root = self.ctx.checkpoint_dir
            path = ckpt.save_checkpoint(root, self.step, model=_WeightsWriter(self), optimizer=self.optimizer,
                                        scheduler=self.scheduler, state=state, extra_tensors=tensors or None)
            if is_best:
                ckpt.mark_best(root, path, value, name)
            ckpt.prune(root, self.cfg.keep_checkpoints)
            reported = {k: float(v) for k, v in self.last_metrics.items() if k.startswith(self.checkpoint_metrics)}
            self.ctx.checkpoint(self.step, path, reported or None, is_best)
        self.wait()

    def _write_output(self, folder: Path) -> None:
        """The trained weights as a loadable folder, with the tokenizer, the run's config and a model card."""
        folder.mkdir(parents=True, exist_ok=True)
        self.save_weights(folder)
        self.tokenizer.save_pretrained(folder)
        self.cfg.save(folder / "config.yaml")
        project = self.ctx.project()
        snapshot = next((s for s in project.snapshots() if s["id"] == self.snapshot_id), {}) if project else {}
        (folder / "README.md").write_text(self.model_card(snapshot), encoding="utf-8")

    def _result(self, status: str, output: str | None) -> JobResult:
        peak = round(peak_mem_mb(), 1)
        summary = {"tokens": self.tokens, "train_s": round(self.train_time, 2), "steps": self.step,
                   "total_steps": self.total_steps,
                   "tokens_per_s": round(self.tokens / self.train_time, 1) if self.train_time > 0 else 0.0,
                   "peak_mem_mb": peak, "estimate_mb": self.estimate_mb, **self.summary_extras()}
        final = {k: float(v) for k, v in self.last_metrics.items()}
        final["memory/peak_mb"] = peak
        if self.estimate_mb is not None:
            final["memory/estimate_mb"] = float(self.estimate_mb)
        return JobResult(status, output, final, summary)

    def model_card(self, snapshot: dict[str, Any]) -> str:
        """A model card: peft front matter, what was trained, base, data snapshot, final metrics, config, use."""
        cfg, run_id = self.cfg, self.ctx.run_id
        data = f"Snapshot {self.snapshot_id}"
        if snapshot:
            data += (f" ({snapshot.get('kind')}), content hash `{snapshot.get('content_hash')}`, counts "
                     f"{snapshot.get('counts')}, taken {snapshot.get('created_at')}")
        data += (f"; {len(self.train_examples)} training and {len(self.eval_examples)} held-out {self.unit}s "
                 "(split by prompt).")
        metrics = {k: float(v) for k, v in sorted(self.last_metrics.items())}
        heading = (f"# {self.card_title}{f' — run {run_id}' if run_id is not None else ''}"
                   f"{f' ({cfg.name})' if cfg.name else ''}")
        base = f"`{cfg.base_model}`" + (f", started from the adapter `{cfg.adapter_from}`" if cfg.adapter_from else "")
        lines = [
            "---", "library_name: peft", f"base_model: {cfg.base_model}",
            f"tags: [lora, {self.card_tag}, rlhf-workbench]", "---", "",
            heading, "", *self.card_description(), "",
            "## Base model", "", base, "",
            "## Data", "", data, "",
            "## Final metrics", "", *[f"- {k}: {v:.6g}" for k, v in metrics.items() if math.isfinite(v)], "",
            "## Config", "", "```yaml", cfg.to_yaml(with_help=False).rstrip(), "```", "",
            "## Use", "", "```python", *self.card_usage, "```", "",
        ]
        return "\n".join(lines)

    # ================================================================== for the stages
    def micro_batches(self, indices: Sequence[int]) -> Iterator[tuple[list[int], Any]]:
        """This process's micro-batches of a step's indices (``batch_size`` each, ``grad_accum`` of them, the
        processes interleaved), each split into passes of at most ``tokens_per_pass`` tokens
        (:meth:`example_tokens`), each with the context its forward and backward run in: gradients are synchronised
        across processes on the last pass only. The stages weight each pass's loss by its share of the step, so
        the passes add up to the gradient of the whole step however they are cut."""
        bs, accum = self.cfg.batch_size, self.cfg.grad_accum
        passes: list[list[int]] = []
        for m in range(accum):
            lo = (m * self.world + self.rank) * bs
            micro = list(indices[lo:lo + bs])
            if micro:
                passes.extend(self._split_by_tokens(micro))
        for j, part in enumerate(passes):
            last = j == len(passes) - 1
            sync = (contextlib.nullcontext() if last or self.accelerator is None
                    else self.accelerator.no_sync(self.module))
            yield part, sync

    def _split_by_tokens(self, micro: list[int]) -> list[list[int]]:
        """``micro`` in consecutive runs of at most ``tokens_per_pass`` tokens (an example longer than that alone)."""
        budget = self.cfg.tokens_per_pass
        if not budget:
            return [micro]
        out: list[list[int]] = []
        used = 0
        for i in micro:
            n = self.example_tokens(self.train_examples[i])
            if not out or used + n > budget:
                out.append([])
                used = 0
            out[-1].append(i)
            used += n
        return out

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def sum_over_processes(self, sums: dict[str, float]) -> dict[str, float]:
        """``sums`` added up over every process (the same dict when there is one)."""
        if self.world == 1:
            return sums
        totals = torch.tensor(list(sums.values()), dtype=torch.float64, device=self.device)
        totals = self.accelerator.reduce(totals, reduction="sum")
        return dict(zip(sums, totals.tolist()))

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` added up over every process, on the tensor's own device (itself when there is one)."""
        if self.world == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.device), reduction="sum").to(tensor.device)

    def sum_tensors(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each tensor added up over every process (the same tensors when there is one), back on the CPU."""
        if self.world == 1:
            return tensors
        return tuple(self.accelerator.reduce(t.to(self.device), reduction="sum").cpu() for t in tensors)

    def wait(self) -> None:
        """Every process waits here for the others (a no-op in one process)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def train_mode(self) -> None:
        if self.module is not None:
            self.module.train()

    # ================================================================== hooks: what a stage supplies
    def check_inputs(self) -> None:
        """Refuse a config that cannot run, before anything is loaded (a :class:`JobError` naming the field)."""

    def build_model(self) -> None:
        """Load the model; set ``tokenizer``, ``module`` (what the loss runs through), ``lm`` (the causal LM, for
        gradient checkpointing; None when the stage never recomputes) and ``hm`` when it trains a HeadedModel."""
        raise NotImplementedError

    def family_model(self) -> nn.Module | None:
        """The causal LM the stage computes with, for the family check (:func:`engine.families.check_trainable`).
        Default: ``lm``, else the ``hm``'s transformer."""
        if self.lm is not None:
            return self.lm
        return self.hm.transformer() if self.hm is not None else None

    def new_snapshot(self, project: Project, note: str) -> int:
        """Freeze the stage's data as a new snapshot (inside the caller's transaction); its id."""
        raise NotImplementedError

    def count_examples(self, project: Project, snapshot_id: int) -> int:
        """How many training examples a snapshot holds (checked against ``min_examples``)."""
        raise NotImplementedError

    def load_data(self, project: Project, snapshot_id: int) -> tuple[list[Any], list[int]]:
        """The snapshot's encoded examples and, in parallel, the prompt id of each (for the split by prompt)."""
        raise NotImplementedError

    def example_tokens(self, example: Any) -> int:
        """Tokens one training example puts through the model in a pass (for ``tokens_per_pass``)."""
        return len(example.ids)

    def examples_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accum * self.world

    def param_groups(self) -> list[Any]:
        """What AdamW trains: a list of parameters, or of parameter groups. Default: every parameter of ``module``
        that requires a gradient (the trained adapter and its head; the base is frozen)."""
        assert self.module is not None
        return [p for p in self.module.parameters() if p.requires_grad]

    def prepare(self) -> None:
        """Anything the stage needs between the optimizer and the first step; may raise
        :class:`CancelledBeforeTraining`."""

    def make_order(self) -> DataOrder:
        return DataOrder(len(self.train_examples), self.cfg.seed)

    def describe(self) -> str:
        """The run's opening log line."""
        n_params = sum(p.numel() for p in self.params)
        return (f"{self.title}{self.describe_setting()} on {len(self.train_examples)} {self.unit}s "
                f"({len(self.eval_examples)} held out), {self.total_steps} steps of {self.per_step} {self.unit}s, "
                f"{n_params:,} trainable parameters, {self.world} process(es)")

    def describe_setting(self) -> str:
        """What the opening line says after the stage's title (e.g. DPO's loss and beta)."""
        return ""

    def on_train_start(self) -> None:
        """Just before the first step (of this process's run: also after a resume)."""

    def train_step(self, indices: list[int]) -> tuple[dict[str, Any], int]:
        """One optimizer step on the examples ``indices``: (the step's metrics, including ``train/loss``, and the
        tokens it processed over every process). Default: :meth:`accumulate`, gradient clipping, the optimizer
        step, :meth:`train_metrics` on the sums of every process."""
        sums = self.accumulate(indices)
        check_finite(sums["loss"], self.step + 1, self.loss_name)
        grad_norm = None
        if self.cfg.max_grad_norm > 0:
            clip = torch.nn.utils.clip_grad_norm_ if self.accelerator is None else self.accelerator.clip_grad_norm_
            grad_norm = clip(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sums = self.sum_over_processes(sums)
        metrics = self.train_metrics(sums)
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm  # a tensor: read only when the metrics are sent
        return metrics, int(sums["tokens"])

    def accumulate(self, indices: list[int]) -> dict[str, float]:
        """Forward and backward of this process's micro-batches of a step (:meth:`micro_batches`, :meth:`backward`,
        each loss weighted so the step's gradient is that of the mean over all its examples). Returns this process's
        sums: ``loss`` (checked to be finite before the optimizer step), ``tokens`` and whatever the stage's metrics
        need, the same keys on every process."""
        raise NotImplementedError

    def train_metrics(self, sums: dict[str, float]) -> dict[str, Any]:
        """The step's metrics from the sums of every process; must include ``train/loss``."""
        raise NotImplementedError

    def progress_extras(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """More fields for the step's ``progress`` event."""
        return {}

    def has_evaluation(self) -> bool:
        return bool(self.eval_examples)

    def evaluate(self) -> dict[str, float]:
        """Metrics on the held-out examples (keys ``eval/...``); every process takes part."""
        return {}

    def save_weights(self, folder: Path) -> None:
        """Write the trained weights into ``folder`` (a checkpoint's ``adapter/``, or the run's output). Default:
        the adapter ``adapter_name`` of ``hm`` with its head, if it has one."""
        assert self.hm is not None
        self.hm.save_adapter(self.adapter_name, folder)

    def load_weights(self, checkpoint: Path) -> None:
        """Put a checkpoint's trained weights back into the model, in place."""
        assert self.hm is not None
        self.hm.restore_adapter(self.adapter_name, checkpoint / "adapter")

    def extra_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The stage's own checkpoint state: (plain values for ``state.json``, tensors for ``extra.safetensors``)."""
        return {}, {}

    def restore_extra_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Put back what :meth:`extra_state` saved."""

    def summary_extras(self) -> dict[str, Any]:
        return {}

    def card_description(self) -> list[str]:
        """The model card's paragraph on what was trained, as lines."""
        return [f"A LoRA adapter trained by {self.title} in RLHF Workbench."]
