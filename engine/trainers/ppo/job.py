"""The ``ppo`` stage: PPO of a policy adapter against a reward model, all roles on one frozen base.

Flow: the prompts of a snapshot (:mod:`.data`) → base model loaded once → roles as named adapters (:mod:`.roles`)
→ reward (and optional safety cost) sources (:mod:`.rewards`) → per step, in the training skeleton's loop
(:mod:`engine.trainers.base`): a rollout (:class:`~.experience_maker.ExperienceMaker`: ``samples_per_prompt``
responses to each of ``rollout_batch_size`` prompts, advantages by GAE, leave-one-out or the group's mean and
spread), PPO epochs (:class:`~.trainer.PpoTrainer`, which steps the optimizer once per mini-batch), the KL
controller's update; sample responses are stored in the project every ``sample_every`` steps (origin ``model``,
adapter = this run's adapter folder, sampling parameters with the run id and step). The skeleton streams the
metrics, checkpoints every ``checkpoint_every`` steps and on cancel (the best by ``rollout/score_mean``) and writes
the output.

Checkpoints hold the policy adapter (``adapter/``, loadable by peft) and the value adapter and head (``value/``);
the stage's own state is the mini-batch shuffling generator (``extra.safetensors``), the KL coefficient and the
reward normaliser's moments, and the samples are drawn from generators seeded per rollout row from the run's seed
and the step: a resumed run samples the same responses and computes the same losses as an uninterrupted one (on
CPU, bit for bit: tests/engine/test_ppo_job.py).

Several processes (``accelerate launch``, ``num_processes``): each samples, scores and trains on its consecutive
share of a step's prompts (``rollout_batch_size`` must divide among them); a prompt's responses stay in one
process, so rloo's and grpo's advantages are those of the whole rollout, and what needs every row (the reward
normaliser, whitening, each mini-batch's token count, the summed gradients, the KL controller, the metrics) is
summed over the processes. With one mini-batch per PPO epoch a step's update is the one a single process makes;
with several, each process draws its mini-batches from its own rows.

Output: ``RUN_DIR/adapter`` (the policy; ``PeftModel.from_pretrained`` loads it) with a model card and the run's
config, and ``RUN_DIR/value`` (value adapter + head).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from workbench.configs import PpoConfig
from workbench.store import Project

from ...jobs import JobError, JobResult
from ...jobs.context import JobContext
from ...lora import LoraSettings, check_adapter_folder
from ...model_errors import ModelError
from ...reward_model import HEAD_FILE
from ..base import TrainingRun, check_adapter_folders
from .data import prompts_snapshot, snapshot_prompts
from .experience import Experience
from .experience_maker import ExperienceMaker
from .rewards import AdapterScorer, RewardSource, SeparateScorer, is_rule_spec, rule_from_spec
from .roles import POLICY, REWARD, SAFETY, VALUE, PpoRoles
from .sampling import row_seed
from .trainer import PpoTrainer, make_kl_controller, rollout_metrics


ESTIMATOR_NAMES = {"gae": "GAE on a learned value", "rloo": "leave-one-out (rloo)",
                   "grpo": "the group's mean and spread (grpo)"}


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


def build_scorer(spec: str, name: str, roles: PpoRoles, tokenizer, cfg: PpoConfig, device: torch.device, *,
                 as_cost: bool) -> RewardSource:
    what = "safety_model" if as_cost else "reward_model"
    if not as_cost and is_rule_spec(spec):
        try:
            return rule_from_spec(spec)
        except ValueError as e:
            raise JobError(str(e)) from e
    path = Path(spec).expanduser()
    if not path.exists():
        raise JobError(f"{what} {spec}: no such folder")
    separate_base = cfg.reward_base if not as_cost else None
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


# ---------------------------------------------------------------------------------------------- samples
def store_samples(ctx: JobContext, cfg: PpoConfig, prompts: list[tuple[int, Any, Any]], idx: list[int],
                  texts: list[str], exp: Experience, step: int) -> int:
    """Store the first ``samples_per_store`` responses of this rollout in the project as model responses (``idx``
    are the rollout's prompts; ``exp.prompt_index`` says which of them each response answers)."""
    project = ctx.project()
    if project is None:
        return 0
    stored = 0
    for row in range(min(cfg.samples_per_store, len(texts))):
        if not texts[row].strip():
            continue
        sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k,
                    "max_new_tokens": cfg.max_new_tokens, "run_id": ctx.run_id, "ppo_step": step,
                    "score": float(exp.score[row]), "cost": float(exp.cost[row]), "kl": float(exp.kl[row]),
                    "finish_reason": "stop" if bool(exp.finished[row]) else "length"}
        prompt_id = prompts[idx[int(exp.prompt_index[row])]][0]
        project.add_response(prompt_id, texts[row], origin="model", source=f"ppo run {ctx.run_id}",
                             model=cfg.base_model, adapter=str(ctx.output_dir), sampling=sampling, seed=cfg.seed)
        stored += 1
    return stored


# ---------------------------------------------------------------------------------------------- the stage
class PpoRun(TrainingRun):
    title = "PPO"
    who = "PPO"
    unit = "prompt"
    snapshot_unit = "training prompt(s)"
    hint = "import or write prompts first"
    holds_out = False  # held-out prompts never enter a prompts snapshot; the rollouts are the measure
    best_metric = "rollout/score_mean"
    higher_is_better = True
    checkpoint_metrics = "rollout/"
    loss_name = "PPO loss"
    tokens_per_s_key = "perf/tokens_per_s"
    release_every = None  # PpoTrainer.step gives memory back once per PPO step
    card_title = "PPO adapter"
    card_tag = "ppo"

    def check_inputs(self) -> None:
        cfg = self.cfg
        if cfg.rollout_batch_size % self.ctx.world_size:
            raise JobError(f"rollout_batch_size {cfg.rollout_batch_size} does not divide among {self.ctx.world_size} "
                           "processes: each process samples the same number of prompts; make it a multiple")
        if not cfg.reward_model:
            raise JobError("PPO needs a reward model: set reward_model to a reward-model run's adapter folder "
                           "(or rule:contains:WORD for a rule-based reward)")
        for spec, what in ((cfg.reward_model, "reward_model"), (cfg.safety_model, "safety_model")):
            if spec and not is_rule_spec(spec) and not Path(spec).expanduser().exists():
                raise JobError(f"{what} {spec}: no such folder")
        if is_rule_spec(cfg.reward_model):
            try:
                rule_from_spec(cfg.reward_model)
            except ValueError as e:
                raise JobError(str(e)) from e
        for spec, what in ((cfg.reward_model, "reward_model"), (cfg.safety_model, "safety_model")):
            path = Path(spec).expanduser() if spec and not is_rule_spec(spec) else None
            if path is not None and not (path / "config.json").is_file() and not (what == "reward_model" and cfg.reward_base):
                _adapter_or_error(spec, what)
        check_adapter_folders(("adapter_from", cfg.adapter_from), ("reference_adapter", cfg.reference_adapter))

    def build_model(self) -> None:
        """The base once, the roles on it as adapters, the reward (and cost) sources. The prompts snapshot is frozen
        only after this: a run that fails on its inputs leaves the project as it was."""
        from ...models import load_model

        cfg, device = self.cfg, self.device
        # the estimator and its samples_per_prompt were checked when the config was loaded (PpoConfig.validate)
        self.use_value = cfg.advantage_estimator == "gae"
        loaded = load_model(cfg.base_model, device=device, dtype=cfg.dtype, quantize=cfg.quantize,
                            trust_remote_code=cfg.trust_remote_code)
        self.tokenizer = loaded.tokenizer
        lora = LoraSettings.from_run_config(cfg, loaded.model)
        self.reference_from = cfg.reference_adapter or cfg.adapter_from
        value_from = None
        if (self.use_value and cfg.value_from_reward and not is_rule_spec(cfg.reward_model)
                and not cfg.reward_base):
            value_from = cfg.reward_model
            if cfg.normalize_reward:
                # The head starts out predicting the raw score while the returns it learns are normalised scores:
                # its first advantages are off by the score's mean and spread until it relearns the scale.
                self.ctx.log("value_from_reward with normalize_reward: the value head starts on the reward model's "
                             "raw scale but learns normalised returns; set normalize_reward: false (and "
                             "reward_clip: 0) to keep one scale", level="warning")
        try:
            self.roles = PpoRoles(loaded.model, lora.peft_config(), policy_from=cfg.adapter_from,
                                  reference_from=self.reference_from, value_from=value_from, seed=cfg.seed)
        except (ValueError, KeyError, RuntimeError) as e:
            raise JobError(f"the adapters do not fit the base model {cfg.base_model} ({e})") from e
        self.reward = build_scorer(cfg.reward_model, REWARD, self.roles, self.tokenizer, cfg, device, as_cost=False)
        self.cost = (build_scorer(cfg.safety_model, SAFETY, self.roles, self.tokenizer, cfg, device, as_cost=True)
                     if cfg.safety_model else None)
        # self.lm stays None: every role runs in eval mode, where transformers never recomputes activations; the
        # update bounds its memory with backward_rows instead.

    def family_model(self) -> torch.nn.Module:
        return self.roles.transformer

    def new_snapshot(self, project: Project, note: str) -> int:
        return prompts_snapshot(project, note=note)

    def count_examples(self, project: Project, snapshot_id: int) -> int:
        return len(snapshot_prompts(project, snapshot_id))

    def load_data(self, project: Project, snapshot_id: int) -> tuple[list[tuple[int, Any, Any]], list[int]]:
        """(prompt id, messages, prompt token ids) of every prompt."""
        from ...generation import encode_prompt

        max_prompt = self.cfg.max_prompt_tokens or max(8, self.cfg.max_length - self.cfg.max_new_tokens)
        prompts = [(pid, msgs, encode_prompt(self.tokenizer, msgs, max_prompt))
                   for pid, msgs in snapshot_prompts(project, snapshot_id)]
        return prompts, [pid for pid, _, _ in prompts]

    def examples_per_step(self) -> int:
        return self.cfg.rollout_batch_size

    def param_groups(self) -> list[Any]:
        cfg = self.cfg
        return [{"params": self.roles.parameters_of(POLICY)},
                {"params": self.roles.parameters_of(VALUE), "lr": cfg.value_lr or cfg.lr}]

    def prepare(self) -> None:
        cfg = self.cfg
        self.maker = ExperienceMaker(
            self.roles, self.tokenizer, self.reward, cost=self.cost, cost_weight=cfg.safety_weight,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
            forward_batch_size=cfg.batch_size, gamma=cfg.gamma, lam=cfg.lam, normalize_reward=cfg.normalize_reward,
            reward_clip=cfg.reward_clip, missing_eos_penalty=cfg.missing_eos_penalty,
            samples_per_prompt=cfg.samples_per_prompt, advantage_estimator=cfg.advantage_estimator,
        )
        self.ppo = PpoTrainer(
            self.roles, self.optimizer, ppo_epochs=cfg.ppo_epochs, mini_batch_size=cfg.batch_size * cfg.grad_accum,
            micro_batch_size=cfg.batch_size, clip_range=cfg.clip_range, value_clip=cfg.value_clip,
            value_coef=cfg.value_coef, max_grad_norm=cfg.max_grad_norm, temperature=cfg.temperature,
            whiten_advantages=self.use_value if cfg.whiten_advantages is None else cfg.whiten_advantages,
            backward_rows=cfg.backward_rows, train_value=self.use_value,
            reduce=self.reduce_sum if self.world > 1 else None,
        )
        self.warmup_steps = cfg.critic_warmup_steps if self.use_value else 0
        if cfg.critic_warmup_steps and not self.use_value:
            self.ctx.log(f"critic_warmup_steps is ignored with advantage_estimator {cfg.advantage_estimator}: no value "
                         "is trained", level="warning")
        self.kl_ctl = make_kl_controller(cfg.kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.kl_horizon, cfg.min_kl_coef)
        # Sampling draws from a generator per rollout row, seeded from (seed, step, prompt position, sample): a
        # resumed run, or several processes sharing the rollout, sample exactly what one uninterrupted process would.
        # Each process shuffles its own rows into mini-batches.
        self.shuffle_gen = torch.Generator().manual_seed(cfg.seed + 1 + self.rank)

    def describe(self) -> str:
        cfg = self.cfg
        trained = self.roles.parameters_of(POLICY) + (self.roles.parameters_of(VALUE) if self.use_value else [])
        per_prompt = f" x {cfg.samples_per_prompt} responses" if cfg.samples_per_prompt > 1 else ""
        shared = self.roles.shared_depth
        return (f"PPO on {len(self.train_examples)} prompts of snapshot {self.snapshot_id}: {self.total_steps} steps of "
                f"{cfg.rollout_batch_size} prompts{per_prompt}, advantages by "
                f"{ESTIMATOR_NAMES[cfg.advantage_estimator]}, "
                f"{sum(p.numel() for p in trained):,} trainable parameters "
                f"({'policy + value' if self.use_value else 'policy'}), reference = "
                f"{'adapter ' + str(self.reference_from) if self.reference_from else 'the bare base'}, reward = "
                f"{cfg.reward_model}{', safety cost from ' + str(cfg.safety_model) if cfg.safety_model else ''}"
                f"{f', the bottom {shared} layers run once for policy, reference and value' if shared else ''}, "
                f"{self.world} process(es)")

    def train_step(self, indices: list[int]) -> tuple[dict[str, Any], int]:
        """A rollout of the prompts ``indices`` and its PPO epochs (several optimizer steps). With several processes
        each samples and trains on its consecutive share of the prompts; what needs the whole rollout (the reward
        normaliser, whitening, the mini-batches' token counts, the gradients, the KL controller, the metrics) is
        summed over them."""
        t0 = time.perf_counter()
        cfg, prompts, reduce = self.cfg, self.train_examples, (self.reduce_sum if self.world > 1 else None)
        n = len(indices) // self.world
        first = self.rank * n
        mine = indices[first : first + n]
        seeds = [row_seed(cfg.seed, self.step, first + p, j) for p in range(n) for j in range(cfg.samples_per_prompt)]
        exp, texts = self.maker.make([prompts[i][2] for i in mine], [prompts[i][1] for i in mine],
                                     self.kl_ctl.value, row_seeds=seeds, reduce=reduce)
        t_roll = time.perf_counter() - t0
        # critic warm-up: the first steps fit the value to the returns before the policy follows its advantages
        stats = self.ppo.step(exp, self.shuffle_gen, train_policy=self.step >= self.warmup_steps)
        kl_used = self.kl_ctl.value
        kl_sum = self.reduce_sum(torch.stack([exp.kl.double().sum(), torch.tensor(float(exp.batch_size),
                                                                                  dtype=torch.float64)]))
        self.kl_ctl.update(float(kl_sum[0] / kl_sum[1]), int(kl_sum[1]))
        step_s = time.perf_counter() - t0
        tokens = int(self.reduce_sum(exp.attention_mask.sum().double()))
        metrics = {**rollout_metrics(exp, texts, kl_used, reduce), **stats, "train/loss": stats["ppo/loss"],
                   "perf/response_tokens_per_s": float(exp.response_mask.sum()) / max(t_roll, 1e-9),
                   "perf/step_s": step_s, "perf/rollout_s": t_roll, "perf/update_s": step_s - t_roll,
                   **{f"perf/{k}": v for k, v in self.maker.timings.items()}}
        step = self.step + 1
        if cfg.sample_every and (step % cfg.sample_every == 0 or step == 1):
            store_samples(self.ctx, cfg, prompts, mine, texts, exp, step)  # the main process's share
        return metrics, tokens

    def progress_extras(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"reward": round(metrics["rollout/score_mean"], 4), "kl": round(metrics["rollout/kl"], 4)}

    def save_weights(self, folder: Path) -> None:
        """The policy into ``folder``, the value adapter and its head into ``value/`` beside it (in a checkpoint and
        in the run folder alike)."""
        self.roles.save_policy(folder)
        self.roles.save_value(folder.parent / "value")

    def load_weights(self, checkpoint: Path) -> None:
        self.roles.load_trainable_state(checkpoint / "adapter", checkpoint / "value")

    def extra_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return ({"kl_ctl": self.kl_ctl.state_dict(), "maker": self.maker.state_dict()},
                {"shuffle_rng": self.shuffle_gen.get_state()})

    def restore_extra_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.shuffle_gen.set_state(tensors["shuffle_rng"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.maker.load_state_dict(state["maker"])

    def card_description(self) -> list[str]:
        cfg = self.cfg
        reference = f"the adapter `{self.reference_from}`" if self.reference_from else "the bare base model"
        return [
            "A LoRA adapter trained by PPO in RLHF Workbench.", "",
            f"Policy trained by PPO against the reward model `{cfg.reward_model}`"
            + (f", with a safety cost from `{cfg.safety_model}` (weight {cfg.safety_weight})" if cfg.safety_model else "")
            + ".",
            f"KL measured against {reference}; the value adapter and head are in `{self.ctx.run_dir / 'value'}`.",
        ]


def run(ctx: JobContext) -> JobResult:
    return PpoRun(ctx).run()
