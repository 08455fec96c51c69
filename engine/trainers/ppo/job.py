"""The ``ppo`` job: PPO of a policy adapter against a reward model, all roles on one frozen base.

Flow: prompts of a snapshot (``engine.trainers.ppo.data``) → base model loaded once → roles as named adapters
(``engine.trainers.ppo.roles``) → reward (and optional safety cost) sources (``engine.trainers.ppo.rewards``) → per step: a rollout
(``ExperienceMaker``: ``samples_per_prompt`` responses to each of ``rollout_batch_size`` prompts, advantages by GAE
or leave-one-out), PPO epochs (``PpoTrainer``), the KL controller's update, metrics streamed and stored, sample
responses stored in the project every ``sample_every`` steps (origin ``model``, adapter = this run's adapter
folder, sampling parameters with the run id and step), a checkpoint every ``checkpoint_every`` steps and on cancel.

Checkpoints hold the policy adapter (``adapter/``, loadable by peft), the value adapter and head (``value/``), the
optimizer and scheduler, the global RNG states, the sampling and shuffling generators (``extra.safetensors``), the
KL coefficient, the reward normaliser's moments and the prompt order: a resumed run samples the same responses and
computes the same losses as an uninterrupted one (on CPU, bit for bit: tests/engine/test_ppo_job.py).

Output: ``RUN_DIR/adapter`` (the policy; ``PeftModel.from_pretrained`` loads it) with a model card and the run's
config, and ``RUN_DIR/value`` (value adapter + head).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from workbench.configs import PpoConfig
from workbench.store import Project

from ... import checkpoints as ckpt
from ...jobs import JobError, JobResult
from ...jobs.context import JobContext
from ...lora import LoraSettings, check_adapter_folder
from ...model_errors import ModelError
from ...reward_model import HEAD_FILE
from ...training import DataOrder, check_finite, warmup_cosine
from .data import prompts_snapshot, snapshot_prompts
from .experience_maker import ExperienceMaker
from .rewards import AdapterScorer, RewardSource, SeparateScorer, is_rule_spec, rule_from_spec
from .roles import POLICY, REWARD, SAFETY, VALUE, PpoRoles
from .settings import PpoExtras
from .trainer import PpoTrainer, make_kl_controller, rollout_metrics

SNAPSHOT_FILE = "snapshot_id"


def peak_mem_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    if torch.cuda.is_available():
        return max(cpu, torch.cuda.max_memory_allocated() / 2**20)
    return cpu


# ---------------------------------------------------------------------------------------------- data
def freeze_or_read_prompts(ctx: JobContext, cfg: PpoConfig) -> int:
    project = ctx.project()
    assert project is not None
    if cfg.snapshot_id is not None:
        n = len(snapshot_prompts(project, cfg.snapshot_id))
        if n < cfg.min_examples:
            raise JobError(f"snapshot {cfg.snapshot_id} holds {n} training prompt(s); PPO needs at least {cfg.min_examples}")
        return cfg.snapshot_id
    with project.transaction():
        sid = prompts_snapshot(project, note=f"ppo run {ctx.run_id}")
        n = len(snapshot_prompts(project, sid))
        if n < cfg.min_examples:
            raise JobError(f"the project has {n} training prompt(s); PPO needs at least {cfg.min_examples} "
                           "(import or write prompts first)")
        if ctx.run_id is not None:
            project.update_run(ctx.run_id, snapshot_id=sid)
    return sid


# ---------------------------------------------------------------------------------------------- reward sources
def _adapter_or_error(path: str, what: str) -> Path:
    try:
        folder = check_adapter_folder(path)
    except ModelError as e:
        raise JobError(f"{what}: {e}") from e
    if not (folder / HEAD_FILE).is_file():
        raise JobError(f"{what} {path}: the adapter has no {HEAD_FILE}, so it is not a reward model or classifier "
                       "(pick the output folder of a `train rm` or `train safety` run)")
    return folder


def build_scorer(spec: str, name: str, roles: PpoRoles, tokenizer, cfg: PpoConfig, extras: PpoExtras,
                 device: torch.device, *, as_cost: bool) -> RewardSource:
    what = "safety_model" if as_cost else "reward_model"
    if not as_cost and is_rule_spec(spec):
        try:
            return rule_from_spec(spec)
        except ValueError as e:
            raise JobError(str(e)) from e
    path = Path(spec).expanduser()
    if not path.exists():
        raise JobError(f"{what} {spec}: no such folder")
    separate_base = extras.reward_base if not as_cost else None
    if (path / "config.json").is_file() or separate_base:
        try:
            return SeparateScorer(path, base=separate_base, device=device, max_length=cfg.max_length,
                                  batch_size=cfg.batch_size, as_cost=as_cost, trust_remote_code=cfg.trust_remote_code)
        except (ModelError, ValueError, FileNotFoundError) as e:
            raise JobError(f"{what} {spec}: {e}") from e
    folder = _adapter_or_error(spec, what)
    try:
        roles.load_frozen(name, folder)
    except (ValueError, KeyError, RuntimeError) as e:
        raise JobError(f"{what} {spec} does not fit the base model {cfg.base_model} ({e}); a reward model trained on "
                       "another base needs reward_base") from e
    return AdapterScorer(roles, name, tokenizer, cfg.max_length, cfg.batch_size, as_cost=as_cost)


# ---------------------------------------------------------------------------------------------- checkpoints
class _Saver:
    """What ``engine.checkpoints.save_checkpoint`` calls ``save_pretrained`` on: the policy into ``adapter/`` and
    the value adapter with its head beside it in ``value/``."""

    def __init__(self, roles: PpoRoles):
        self.roles = roles

    def save_pretrained(self, path: Path) -> None:
        self.roles.save_policy(path)
        self.roles.save_value(Path(path).parent / "value")


# ---------------------------------------------------------------------------------------------- the job
def run_job(ctx: JobContext, *, reward: RewardSource | None = None) -> JobResult:
    """Run PPO for ``ctx``; ``reward`` overrides the config's reward model (tests pass a rule)."""
    from ...devices import resolve_device
    from ...generation import encode_prompt
    from ...models import load_model

    cfg: PpoConfig = ctx.config  # type: ignore[assignment]
    extras = PpoExtras.from_config(cfg)
    torch.manual_seed(cfg.seed)
    if ctx.world_size > 1:
        raise JobError("PPO runs in a single process in this version (set num_processes: 1)")
    if reward is None and not cfg.reward_model:
        raise JobError("PPO needs a reward model: set reward_model to a reward-model run's adapter folder "
                       "(or rule:contains:WORD for a rule-based reward)")
    for spec, what in ((cfg.reward_model, "reward_model"), (extras.safety_model, "safety_model")):
        if spec and not is_rule_spec(spec) and not Path(spec).expanduser().exists():
            raise JobError(f"{what} {spec}: no such folder")
    if reward is None and is_rule_spec(cfg.reward_model):
        try:
            rule_from_spec(cfg.reward_model)
        except ValueError as e:
            raise JobError(str(e)) from e
    for spec, what in ((cfg.reward_model, "reward_model"), (extras.safety_model, "safety_model")):
        path = Path(spec).expanduser() if spec and not is_rule_spec(spec) else None
        if path is not None and not (path / "config.json").is_file() and not (what == "reward_model" and extras.reward_base):
            _adapter_or_error(spec, what)
    for what, spec in (("adapter_from", cfg.adapter_from), ("reference_adapter", extras.reference_adapter)):
        if spec:
            try:
                check_adapter_folder(spec)
            except ModelError as e:
                raise JobError(f"{what}: {e}") from e
    if ctx.project_path is None:
        raise JobError("PPO needs a project (its prompts)")
    # the estimator and its samples_per_prompt were checked when the config was loaded (PpoConfig.validate)
    use_value = extras.advantage_estimator == "gae"

    device = resolve_device(cfg.device)
    loaded = load_model(cfg.base_model, device=device, dtype=cfg.dtype, quantize=cfg.quantize,
                        trust_remote_code=cfg.trust_remote_code)
    tokenizer = loaded.tokenizer
    lora = LoraSettings.from_run_config(cfg, loaded.model)
    reference_from = extras.reference_adapter or cfg.adapter_from
    value_from = None
    if (use_value and extras.value_from_reward and cfg.reward_model and not is_rule_spec(cfg.reward_model)
            and not extras.reward_base):
        value_from = cfg.reward_model
        if extras.normalize_reward:
            # The head starts out predicting the raw score while the returns it learns are normalised scores: its
            # first advantages are off by the score's mean and spread until it relearns the scale.
            ctx.log("value_from_reward with normalize_reward: the value head starts on the reward model's raw scale "
                    "but learns normalised returns; set normalize_reward: false (and reward_clip: 0) to keep one "
                    "scale", level="warning")
    try:
        roles = PpoRoles(loaded.model, lora.peft_config(), policy_from=cfg.adapter_from, reference_from=reference_from,
                         value_from=value_from, seed=cfg.seed)
    except (ValueError, KeyError, RuntimeError) as e:
        raise JobError(f"the adapters do not fit the base model {cfg.base_model} ({e})") from e
    reward_src = reward or build_scorer(cfg.reward_model, REWARD, roles, tokenizer, cfg, extras, device, as_cost=False)
    cost_src = (build_scorer(extras.safety_model, SAFETY, roles, tokenizer, cfg, extras, device, as_cost=True)
                if extras.safety_model else None)

    # The prompts snapshot is frozen only once everything above loaded: a run that fails on its inputs leaves the
    # project as it was.
    if ctx.is_main:
        sid = freeze_or_read_prompts(ctx, cfg)
        (ctx.run_dir / SNAPSHOT_FILE).write_text(str(sid))
    else:
        sid = int((ctx.run_dir / SNAPSHOT_FILE).read_text())
    with Project.open(ctx.project_path, migrate=False) as project:
        prompts = snapshot_prompts(project, sid)

    max_prompt = extras.max_prompt_tokens or max(8, cfg.max_length - cfg.max_new_tokens)
    encoded = [encode_prompt(tokenizer, msgs, max_prompt) for _, msgs in prompts]
    maker = ExperienceMaker(
        roles, tokenizer, reward_src, cost=cost_src, cost_weight=extras.safety_weight,
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=extras.top_k, top_p=cfg.top_p,
        forward_batch_size=cfg.batch_size, gamma=cfg.gamma, lam=cfg.lam, normalize_reward=extras.normalize_reward,
        reward_clip=extras.reward_clip, missing_eos_penalty=extras.missing_eos_penalty,
        samples_per_prompt=extras.samples_per_prompt, advantage_estimator=extras.advantage_estimator,
    )
    policy_params, value_params = roles.parameters_of(POLICY), roles.parameters_of(VALUE)
    optimizer = torch.optim.AdamW([{"params": policy_params},
                                   {"params": value_params, "lr": extras.value_lr or cfg.lr}], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(prompts) / cfg.rollout_batch_size))
    total_steps = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))
    scheduler = warmup_cosine(optimizer, total_steps, cfg.warmup_ratio, cfg.min_lr_ratio)
    trainer = PpoTrainer(
        roles, optimizer, ppo_epochs=cfg.ppo_epochs, mini_batch_size=cfg.batch_size * cfg.grad_accum,
        micro_batch_size=cfg.batch_size, clip_range=cfg.clip_range, value_clip=cfg.value_clip,
        value_coef=cfg.value_coef, max_grad_norm=cfg.max_grad_norm, temperature=cfg.temperature,
        whiten_advantages=use_value if extras.whiten_advantages is None else extras.whiten_advantages,
        backward_rows=cfg.backward_rows, train_value=use_value,
    )
    warmup_steps = extras.critic_warmup_steps if use_value else 0
    if extras.critic_warmup_steps and not use_value:
        ctx.log("critic_warmup_steps is ignored with advantage_estimator rloo: no value is trained", level="warning")
    kl_ctl = make_kl_controller(cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl, extras.kl_horizon, extras.min_kl_coef)
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1)
    order = DataOrder(len(prompts), cfg.seed)
    step, tokens_seen, train_time, best = 0, 0, 0.0, -float("inf")

    if ctx.resume:
        last = ckpt.latest_checkpoint(ctx.checkpoint_dir)
        if last is None:
            raise JobError(f"nothing to resume: no checkpoint in {ctx.checkpoint_dir}")
        roles.load_trainable_state(last / "adapter", last / "value")
        optimizer.load_state_dict(torch.load(last / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=True))
        ckpt.set_rng_state(torch.load(last / "rng.pt", weights_only=True))
        from safetensors.torch import load_file

        gens = load_file(str(last / "extra.safetensors"))
        sample_gen.set_state(gens["sample_rng"])
        shuffle_gen.set_state(gens["shuffle_rng"])
        import json

        state = json.loads((last / "state.json").read_text(encoding="utf-8"))
        step, tokens_seen, train_time = int(state["step"]), int(state["tokens"]), float(state["train_time"])
        best = float(state.get("best", best))
        kl_ctl.load_state_dict(state["kl_ctl"])
        maker.load_state_dict(state["maker"])
        order = DataOrder.from_state(state["data_order"], len(prompts))
        ctx.log(f"resumed from {last.name} at step {step}")

    n_trainable = sum(p.numel() for p in policy_params + (value_params if use_value else []))
    per_prompt = (f" x {extras.samples_per_prompt} responses" if extras.samples_per_prompt > 1 else "")
    ctx.log(f"PPO on {len(prompts)} prompts of snapshot {sid}: {total_steps} steps of {cfg.rollout_batch_size} "
            f"prompts{per_prompt}, advantages by {'GAE on a learned value' if use_value else 'leave-one-out (rloo)'}, "
            f"{n_trainable:,} trainable parameters ({'policy + value' if use_value else 'policy'}), reference = "
            f"{'adapter ' + str(reference_from) if reference_from else 'the bare base'}, reward = "
            f"{cfg.reward_model if reward is None else getattr(reward, 'description', 'given')}"
            f"{', safety cost from ' + str(extras.safety_model) if extras.safety_model else ''}"
            f"{f', the bottom {roles.shared_depth} layers run once for policy, reference and value' if roles.shared_depth else ''}")
    last_metrics: dict[str, float] = {}

    def save(step: int) -> None:
        nonlocal best
        score = last_metrics.get("rollout/score_mean", -float("inf"))
        is_best = score > best
        if is_best:
            best = score
        state = {"tokens": tokens_seen, "train_time": train_time, "best": best, "kl_ctl": kl_ctl.state_dict(),
                 "maker": maker.state_dict(), "data_order": order.state(), "total_steps": total_steps,
                 "snapshot_id": sid}
        path = ckpt.save_checkpoint(
            ctx.checkpoint_dir, step, model=_Saver(roles), optimizer=optimizer, scheduler=scheduler, state=state,
            extra_tensors={"sample_rng": sample_gen.get_state(), "shuffle_rng": shuffle_gen.get_state()},
        )
        if is_best:
            ckpt.mark_best(ctx.checkpoint_dir, path, score, "rollout/score_mean")
        ckpt.prune(ctx.checkpoint_dir, cfg.keep_checkpoints)
        ctx.checkpoint(step, path, {k: v for k, v in last_metrics.items() if k.startswith("rollout/")}, is_best)

    while step < total_steps:
        t0 = time.perf_counter()
        idx = order.take(cfg.rollout_batch_size)
        convs = [prompts[i][1] for i in idx]
        exp, texts = maker.make([encoded[i] for i in idx], convs, kl_ctl.value, sample_gen)
        t_roll = time.perf_counter() - t0
        lr = scheduler.get_last_lr()[0]
        # critic warm-up: the first steps fit the value to the returns before the policy follows its advantages
        stats = trainer.step(exp, shuffle_gen, train_policy=step >= warmup_steps)
        scheduler.step()
        kl_used = kl_ctl.value
        kl_ctl.update(float(exp.kl.mean()), exp.batch_size)
        step += 1
        check_finite(stats.get("ppo/loss", 0.0), step, "PPO loss")
        elapsed = time.perf_counter() - t0
        step_tokens = int(exp.attention_mask.sum())
        tokens_seen += step_tokens
        train_time += elapsed
        metrics = {**rollout_metrics(exp, texts, kl_used), **stats}
        metrics.update({
            "train/loss": stats["ppo/loss"], "train/lr": lr, "train/epoch": order.epoch, "perf/tokens_per_s": tokens_seen / train_time,
            "perf/response_tokens_per_s": float(exp.response_mask.sum()) / max(t_roll, 1e-9),
            "perf/step_s": elapsed, "perf/rollout_s": t_roll, "perf/peak_mem_mb": peak_mem_mb(),
        })
        last_metrics.update(metrics)
        if step % cfg.log_every == 0 or step == total_steps:
            ctx.metrics(step, metrics)
        if extras.sample_every and (step % extras.sample_every == 0 or step == 1):
            store_samples(ctx, cfg, extras, prompts, idx, texts, exp, step)
        ctx.progress(step, total_steps, tokens=tokens_seen, tokens_per_s=round(tokens_seen / train_time, 1),
                     reward=round(metrics["rollout/score_mean"], 4), kl=round(metrics["rollout/kl"], 4),
                     eta_s=round((total_steps - step) * train_time / max(1, step), 1))
        stop = ctx.should_stop()
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps) or stop:
            save(step)
        if stop:
            ctx.log(f"cancelled at step {step}; checkpoint saved")
            return JobResult("cancelled", None, dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps))

    output = ctx.output_dir
    write_output(output, roles, tokenizer, cfg, ctx, sid, last_metrics, reference_from)
    return JobResult("done", str(output), dict(last_metrics), _summary(tokens_seen, train_time, step, total_steps))


def _summary(tokens: int, seconds: float, step: int, total: int) -> dict[str, Any]:
    return {"tokens": tokens, "train_s": round(seconds, 2), "steps": step, "total_steps": total,
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else 0.0, "peak_mem_mb": round(peak_mem_mb(), 1)}


def store_samples(ctx: JobContext, cfg: PpoConfig, extras: PpoExtras, prompts, idx: list[int], texts: list[str],
                  exp, step: int) -> int:
    """Store the first ``samples_per_store`` responses of this rollout in the project as model responses (``idx``
    are the rollout's prompts; ``exp.prompt_index`` says which of them each response answers)."""
    project = ctx.project()
    if project is None:
        return 0
    stored = 0
    for row in range(min(extras.samples_per_store, len(texts))):
        if not texts[row].strip():
            continue
        sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": extras.top_k,
                    "max_new_tokens": cfg.max_new_tokens, "run_id": ctx.run_id, "ppo_step": step,
                    "score": float(exp.score[row]), "cost": float(exp.cost[row]), "kl": float(exp.kl[row]),
                    "finish_reason": "stop" if bool(exp.finished[row]) else "length"}
        prompt_id = prompts[idx[int(exp.prompt_index[row])]][0]
        project.add_response(prompt_id, texts[row], origin="model", source=f"ppo run {ctx.run_id}",
                             model=cfg.base_model, adapter=str(ctx.output_dir), sampling=sampling, seed=cfg.seed)
        stored += 1
    return stored


def write_output(output: Path, roles: PpoRoles, tokenizer, cfg, ctx: JobContext, snapshot_id: int,
                 metrics: dict[str, float], reference: str | None) -> None:
    output.mkdir(parents=True, exist_ok=True)
    roles.save_policy(output)
    roles.save_value(ctx.run_dir / "value")
    tokenizer.save_pretrained(output)
    cfg.save(output / "config.yaml")
    snap: dict[str, Any] = {}
    project = ctx.project()
    if project is not None:
        snap = next((s for s in project.snapshots() if s["id"] == snapshot_id), {})
    extras = PpoExtras.from_config(cfg)
    notes = [
        f"Policy trained by PPO against the reward model `{cfg.reward_model}`"
        + (f", with a safety cost from `{extras.safety_model}` (weight {extras.safety_weight})" if extras.safety_model else "")
        + ".",
        f"KL measured against {'the adapter `' + str(reference) + '`' if reference else 'the bare base model'}; "
        f"the value adapter and head are in `{ctx.run_dir / 'value'}`.",
    ]
    (output / "README.md").write_text(model_card("PPO", cfg, snapshot_id, snap, metrics, ctx.run_id, notes),
                                      encoding="utf-8")


def model_card(stage: str, cfg, snapshot_id: int, snapshot: dict[str, Any], metrics: dict[str, float],
               run_id: int | None, notes: list[str]) -> str:
    """A model card (peft front matter, base, data snapshot, what was done, final metrics, config, use)."""
    lines = [
        "---", "library_name: peft", f"base_model: {cfg.base_model}", f"tags: [lora, {stage.lower()}, rlhf-workbench]",
        "---", "",
        f"# {stage} adapter{f' — run {run_id}' if run_id is not None else ''}{f' ({cfg.name})' if cfg.name else ''}", "",
        f"A LoRA adapter trained by {stage} in RLHF Workbench.", "", *notes, "",
        "## Base model", "", f"`{cfg.base_model}`" + (f", started from the adapter `{cfg.adapter_from}`" if cfg.adapter_from else ""), "",
        "## Data", "",
        f"Snapshot {snapshot_id}" + (f" ({snapshot.get('kind')}), content hash `{snapshot.get('content_hash')}`, counts "
                                     f"{snapshot.get('counts')}, taken {snapshot.get('created_at')}" if snapshot else ""),
        "", "## Final metrics", "",
        *[f"- {k}: {v:.6g}" for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and math.isfinite(v)],
        "", "## Config", "", "```yaml", cfg.to_yaml(with_help=False).rstrip(), "```", "",
        "## Use", "", "```python", "from peft import PeftModel",
        "model = PeftModel.from_pretrained(base_model, 'path/to/this/folder')", "```", "",
    ]
    return "\n".join(lines)

