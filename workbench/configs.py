"""Run configs: one dataclass per job kind, every field with a default and help text, saved as YAML.

A config is what a run folder's ``config.yaml`` holds and what ``python -m engine.worker`` reads back, so it is
the whole contract between whoever starts a job (the CLI, the window) and the engine. Qt-free and torch-free.

Layout: :class:`ModelConfig` (which model, on which device) → :class:`BaseRunConfig` (LoRA training common to
every trainer) → one class per stage. :data:`CONFIG_CLASSES` maps a stage name to its class; other stages extend
the stubs here (ask the owner of this file). Field metadata: ``help`` (shown as a YAML comment, a tooltip and CLI
help), and optionally ``min``/``max`` (range) and ``choices`` (allowed values), checked by ``validate``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import InputError
from .paths import BUNDLED_MODEL_REF, named_chat_templates
from .taxonomy import DEFAULT_STRENGTH_MARGIN, SPLITS, STRENGTHS

C = TypeVar("C", bound="ModelConfig")


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (mutable defaults go through a factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    """Which model a job loads and where it runs."""

    base_model: str = _f(BUNDLED_MODEL_REF, "Base model: a Hugging Face hub id (local cache only), a local folder, a "
                         "GGUF file, or 'bundled:SmolLM2-135M-Instruct'.")
    trust_remote_code: bool = _f(False, "Allow a model that ships its own Python code (only for models you trust).")
    device: str = _f("auto", "auto (CUDA, then Apple MPS, then CPU), cuda, cuda:N, mps or cpu.")
    dtype: str = _f("auto", "auto (bf16 on a capable GPU, fp32 on CPU), float32, bfloat16 or float16.")
    quantize: str = _f("auto", "auto (4-bit NF4 when CUDA is present, none otherwise), 4bit or none.")
    adapter_from: str | None = _f(None, "Start from this LoRA adapter folder (e.g. an SFT run's output) instead of a "
                                  "fresh one.")
    chat_template: str | None = _f(None, "Chat template for the base model: none uses the model's own (or the one "
                                   "recorded with adapter_from); or a named template shipped with the app (chatml, "
                                   "llama3, gemma), or the path of a Jinja file. Needed for a base model that has "
                                   "none; the template used is saved with the run's adapter and in every export.")
    num_threads: int | None = _f(None, "CPU threads for torch (none: all cores but one, so the window stays "
                                 "fluid; the command line's jobs take every core).", min=1)
    seed: int = _f(42, "Random seed for data order, LoRA initialisation, dropout and sampling.")
    name: str = _f("", "A name for the run, shown in run lists.")

    # ------------------------------------------------------------------ YAML
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, *, with_help: bool = True) -> str:
        """YAML text; with ``with_help`` each key is preceded by its help text as a comment."""
        if not with_help:
            return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        lines = [f"# {type(self).__name__}: {(type(self).__doc__ or '').strip().splitlines()[0]}"]
        for f in dataclasses.fields(self):
            help_text = f.metadata.get("help", "")
            if help_text:
                lines.append(f"# {help_text}")
            lines.append(yaml.safe_dump({f.name: getattr(self, f.name)}, sort_keys=False, allow_unicode=True,
                                        default_flow_style=False, width=1000).rstrip())
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(self.to_yaml(), encoding="utf-8")
        return p

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, source: str | None = None) -> C:
        """Build from a mapping; an unknown key or a value of the wrong type is an :class:`InputError` naming it."""
        if not isinstance(data, dict):
            raise InputError(f"a {cls.__name__} must be a mapping of settings, not {type(data).__name__}", path=source)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in data.items():
            if key not in fields:
                close = [n for n in fields if n.replace("_", "") == str(key).replace("_", "").replace("-", "")]
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise InputError(f"unknown setting for {cls.__name__}{hint}", path=source, field=str(key))
            kwargs[key] = _coerce(value, hints[key], source, key)
        cfg = cls(**kwargs)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls: type[C], text: str, *, source: str | None = None) -> C:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise InputError(f"not valid YAML: {getattr(e, 'problem', e)}", path=source,
                             line=mark.line + 1 if mark is not None else None) from e
        except RecursionError:
            raise InputError("not valid YAML: nested too deeply", path=source) from None
        except ValueError as e:  # a number YAML reads but Python cannot convert (an integer of 4,300+ digits)
            raise InputError(f"not valid YAML: {str(e).split(';')[0]}", path=source) from None
        return cls.from_dict(data or {}, source=source)

    @classmethod
    def load(cls: type[C], path: str | os.PathLike[str]) -> C:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise InputError("no such config file", path=str(p)) from e
        return cls.from_yaml(text, source=str(p))

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (``None`` values are ignored, so CLI flags left out change nothing)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self, source: str | None = None) -> None:
        """Range checks beyond types; raise :class:`InputError` naming the field."""
        choices = {"quantize": ("auto", "4bit", "none"), "dtype": ("auto", "float32", "bfloat16", "float16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"must be one of {', '.join(allowed)}, not {getattr(self, name)!r}", path=source, field=name)
        _check_chat_template(self.chat_template, source)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = f.metadata.get("choices")
            if allowed is not None and value is not None and value not in allowed:
                raise InputError(f"must be one of {', '.join(allowed)}, not {value!r}", path=source, field=f.name)
            lo = f.metadata.get("min")
            if lo is not None and value is not None and value < lo:
                raise InputError(f"must be at least {lo}, not {value}", path=source, field=f.name)
            hi = f.metadata.get("max")
            if hi is not None and value is not None and value > hi:
                raise InputError(f"must be at most {hi}, not {value}", path=source, field=f.name)


def _check_chat_template(value: str | None, source: str | None) -> None:
    """A chat template names a shipped template or an existing file (its Jinja is checked when it is loaded)."""
    if value is None:
        return
    named = named_chat_templates()
    if value.strip() in named:
        return
    if not value.strip():
        raise InputError(f"is empty; leave it out (the model's own template) or name one of {', '.join(named)} or a "
                         ".jinja file", path=source, field="chat_template")
    if not Path(value).expanduser().is_file():
        raise InputError(f"{value!r} is neither a named template ({', '.join(named)}) nor an existing Jinja file",
                         path=source, field="chat_template")


def _coerce(value: Any, hint: Any, source: str | None, key: str) -> Any:
    """Check a YAML value against a field's type hint; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, source, key)
            except InputError as e:
                errors.append(e)
        raise errors[0]
    if origin in (list, tuple):
        if isinstance(value, str) and typing.get_args(hint) == (str,):
            return [value]
        if not isinstance(value, list):
            raise InputError(f"expected a list, got {value!r}", path=source, field=key)
        (inner,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(v, inner, source, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"expected a mapping, got {value!r}", path=source, field=key)
        _, vt = typing.get_args(hint)
        return {str(k): _coerce(v, vt, source, key) for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"expected a number, got {value!r}", path=source, field=key)
        try:
            number = float(value)
        except OverflowError:
            raise InputError(f"the number {value} is too large", path=source, field=key) from None
        if not math.isfinite(number):
            raise InputError(f"expected a finite number, got {value!r}", path=source, field=key)
        return number
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise InputError(f"expected a whole number, got {value!r}", path=source, field=key)
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"expected true or false, got {value!r}", path=source, field=key)
        return value
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InputError(f"expected text, got {value!r}", path=source, field=key)
        return str(value)
    return value


@dataclass
class BaseRunConfig(ModelConfig):
    """Settings shared by every LoRA trainer (SFT, reward model, safety classifier, DPO, PPO)."""

    snapshot_id: int | None = _f(None, "Train on this snapshot of the project; none: freeze a new one from the "
                                 "current data when the run starts.")
    lora_r: int = _f(16, "LoRA rank.", min=1)
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r).", min=1)
    lora_dropout: float = _f(0.0, "Dropout on the LoRA input. Off by default, as in TRL's reward trainer: peft draws "
                             "a mask per adapted layer and keeps the dropped copy for the backward pass, which "
                             "costs about a fifth of the step time and a tenth of the memory; try 0.05-0.1 "
                             "against overfitting on small data.", min=0.0, max=1.0)
    lora_targets: list[str] = _f(["all-linear"], "Modules that get LoRA: 'all-linear' or module names such as "
                                 "q_proj, v_proj.")
    lora_top_layers: int | None = _f(None, "Put LoRA only on the top N transformer layers (none: every layer). The "
                                     "backward pass then stops below them: faster and lighter, less capacity.", min=1)
    lr: float = _f(2e-4, "Peak learning rate (AdamW).", min=0.0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", min=0.0)
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this (0: no clipping).", min=0.0)
    batch_size: int = _f(8, "Examples per micro-batch (per process).", min=1)
    grad_accum: int = _f(1, "Micro-batches accumulated per optimizer step.", min=1)
    epochs: float = _f(1.0, "Passes over the training data (fractions allowed).", min=0.0)
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (overrides epochs when set).", min=1)
    max_length: int = _f(512, "Maximum tokens per example; longer conversations lose their oldest turns first, "
                         "never the response.", min=8)
    warmup_ratio: float = _f(0.03, "Fraction of the steps with a linear warm-up before the cosine decay.", min=0.0, max=1.0)
    min_lr_ratio: float = _f(0.0, "The cosine decays to this fraction of the peak learning rate.", min=0.0, max=1.0)
    checkpoint_every: int = _f(50, "Save a checkpoint every N optimizer steps (0: only at the end).", min=0)
    keep_checkpoints: int = _f(2, "Keep the last N checkpoints (plus the best one).", min=1)
    eval_fraction: float = _f(0.05, "Fraction of the examples held out for the eval loss (split by prompt).",
                              min=0.0, max=0.9)
    eval_every: int = _f(0, "Evaluate every N optimizer steps (0: at each checkpoint and at the end).", min=0)
    log_every: int = _f(1, "Report training metrics every N optimizer steps.", min=1)
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass: less memory, ~30% slower.")
    tokens_per_pass: int = _f(1024, "Most tokens in one forward and backward pass: a micro-batch holding more runs as "
                              "several passes whose gradients add up to the very same step, with the activation "
                              "memory of one pass (0: the whole micro-batch in one pass).", min=0)
    num_processes: int = _f(1, "Processes to run under `accelerate launch` (1: a plain single process).", min=1)


@dataclass
class SftConfig(BaseRunConfig):
    """Supervised fine-tuning on the expert's demonstrations."""

    include_winning_responses: bool = _f(False, "Also train on responses that won a judged comparison (strength "
                                         "clear or strong).")
    min_examples: int = _f(2, "Refuse to train on fewer training examples than this.", min=1)


@dataclass
class RewardConfig(BaseRunConfig):
    """A reward model: base + LoRA + scalar head, Bradley–Terry loss with a margin from the judged strength."""

    lr: float = _f(1e-4, "Peak learning rate (AdamW).", min=0.0)
    margins: dict[str, float] = _f({"none": 0.0, "slight": 1 / 3, "clear": 2 / 3, "strong": 1.0},
                                   "Margin added to the Bradley–Terry logit per judged strength (after Llama 2).")
    ties_as_half: bool = _f(False, "Train on ties with a target of 0.5 (otherwise ties are left out).")
    center_rewards: float = _f(0.0, "Coefficient of the auxiliary loss mean((r_chosen + r_rejected)^2) that centres "
                               "rewards around 0 (0: off).", min=0.0)
    share_prompt_encoding: bool = _f(True, "Encode the shared prompt once per pair where that is faster.")
    include_retests: bool = _f(False, "Also train on retest judgments (left out by default).")
    min_examples: int = _f(4, "Refuse to train on fewer training pairs than this.", min=1)
    gradient_checkpointing: bool = _f(
        True,
        "Recompute activations in the backward pass: less memory, ~30% slower. On by default for the reward model, "
        "whose batches hold two responses per pair (as TRL's reward trainer does).",
    )


@dataclass
class SafetyConfig(BaseRunConfig):
    """A safety classifier over the project's flag taxonomy: base + LoRA + one logit per category."""

    lr: float = _f(1e-4, "Peak learning rate (AdamW).", min=0.0)
    categories: list[str] = _f([], "Categories to learn (empty: every category with labels in the snapshot).")
    threshold: float = _f(0.5, "Probability above which a category counts as flagged.", min=0.0, max=1.0)
    min_examples: int = _f(4, "Refuse to train on fewer labelled responses than this.", min=1)


DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")
ADVANTAGE_ESTIMATORS = ("gae", "rloo", "grpo")
# The estimators that compare the responses to one prompt (a group baseline, no value): at least two per prompt.
GROUP_ESTIMATORS = ("rloo", "grpo")
# The taxonomy's strength → margin table with YAML-friendly keys: 'none' stands for a judgment without a strength.
STRENGTH_MARGINS: dict[str, float] = {("none" if k is None else k): v for k, v in DEFAULT_STRENGTH_MARGIN.items()}


def _check_margin_keys(margins: dict[str, float], source: str | None) -> None:
    for key in margins:
        if key not in (*STRENGTHS, "none"):
            raise InputError(f"unknown strength {key!r} in margins; one of {', '.join((*STRENGTHS, 'none'))}",
                             path=source, field="margins")


@dataclass
class DpoConfig(BaseRunConfig):
    """Direct preference optimisation against a frozen reference (the SFT adapter or the bare base)."""

    lr: float = _f(5e-5, "Peak learning rate (AdamW).", min=0.0)
    beta: float = _f(0.1, "Strength of the implicit KL penalty.", min=0.0)
    loss_type: str = _f("sigmoid", "sigmoid (the DPO paper), ipo or hinge.", choices=DPO_LOSS_TYPES)
    margins: dict[str, float] = _f(STRENGTH_MARGINS, "Margin subtracted inside the sigmoid per judged strength "
                                   "(slight, clear, strong; 'none': a judgment without a strength).")
    use_margins: bool = _f(True, "Use the strength margins (off: every pair has margin 0, plain DPO).")
    label_smoothing: float = _f(0.0, "Conservative DPO: assumed fraction of flipped labels.", min=0.0, max=0.5)
    reference_adapter: str | None = _f(None, "Adapter that forms the reference model (none: the bare base, or "
                                       "adapter_from when set).")
    min_examples: int = _f(4, "Refuse to train on fewer training pairs than this.", min=1)
    gradient_checkpointing: bool = _f(
        True,
        "Recompute activations in the backward pass: less memory, ~30% slower. On by default for DPO, whose batches "
        "hold two responses per pair.",
    )

    def validate(self, source: str | None = None) -> None:
        super().validate(source)
        _check_margin_keys(self.margins, source)


@dataclass
class PpoConfig(BaseRunConfig):
    """PPO with one frozen base serving policy, reference, value and reward through named LoRA adapters."""

    lr: float = _f(1e-5, "Peak learning rate (AdamW).", min=0.0)
    reward_model: str | None = _f(None, "Reward model: an RM run's adapter folder (or a rule such as "
                                  "'rule:contains:WORD').")
    reward_base: str | None = _f(None, "Base model of a reward model trained on another base (its adapter then runs "
                                 "on its own copy of that base); none: the reward adapter shares the policy's base.")
    safety_model: str | None = _f(None, "Safety classifier: a `train safety` run's adapter folder; none: no safety "
                                  "cost.")
    safety_weight: float = _f(1.0, "Weight of the safety cost subtracted from the reward (Safe-RLHF style).", min=0.0)
    reference_adapter: str | None = _f(None, "Adapter forming the frozen reference (none: adapter_from, else the bare "
                                       "base).")
    value_from_reward: bool = _f(False, "Start the value adapter and head from the reward model's (shared base only).")
    value_lr: float | None = _f(None, "Peak learning rate of the value adapter and head (none: lr). PPO codebases "
                                "often give the value several times the policy's: a value that lags leaves the "
                                "policy's advantages noisy.", min=0.0)
    critic_warmup_steps: int = _f(0, "PPO steps at the start that train only the value: the policy waits until the "
                                  "value predicts the returns (its advantages are noise before that).", min=0)
    normalize_reward: bool = _f(True, "Normalise scores by their running mean and spread before clipping.")
    reward_clip: float = _f(5.0, "Clip the (normalised) score to ±this (0: no clipping).", min=0.0)
    missing_eos_penalty: float = _f(1.0, "Subtracted from the reward of a response cut off before end-of-sequence.")
    rollout_batch_size: int = _f(16, "Prompts per rollout.", min=1)
    samples_per_prompt: int = _f(1, "Responses sampled for each prompt of a rollout (a rollout holds "
                                 "rollout_batch_size x this). Two or more let the rloo estimator compare answers to "
                                 "the same prompt.", min=1)
    advantage_estimator: str = _f("gae", "gae: a learned value and GAE(gamma, lambda), classic PPO. rloo: each "
                                  "response's reward minus the mean reward of the other responses to its prompt "
                                  "(leave-one-out; needs samples_per_prompt >= 2; no value is trained), which "
                                  "removes the prompt's share of the reward's spread. grpo: each response's reward "
                                  "minus its prompt's mean, divided by the spread of that prompt's rewards (as "
                                  "TRL's GRPO; samples_per_prompt >= 2, no value).", choices=ADVANTAGE_ESTIMATORS)
    ppo_epochs: int = _f(4, "Optimisation passes over each rollout.", min=1)
    backward_rows: int = _f(2, "At most this many sequences in one forward/backward of the update (a micro-batch is "
                            "split further; same gradients, less memory). 0: the whole micro-batch.", min=0)
    clip_range: float = _f(0.2, "Policy ratio clip.", min=0.0)
    value_clip: float = _f(0.2, "Value prediction clip.", min=0.0)
    value_coef: float = _f(0.1, "Weight of the value loss.", min=0.0)
    kl_coef: float = _f(0.05, "Initial KL penalty coefficient.", min=0.0)
    adaptive_kl: bool = _f(True, "Adapt the KL coefficient towards target_kl.")
    target_kl: float = _f(6.0, "Target KL for the adaptive controller.", min=0.0)
    kl_horizon: float = _f(512.0, "Horizon (in responses) of the adaptive KL controller: each step moves the "
                           "coefficient by at most 20% x responses/horizon. 512 lets a run of 16-prompt rollouts "
                           "reach its target KL within tens of steps (the 10,000 of large-batch RLHF would take "
                           "hundreds).", min=1.0)
    min_kl_coef: float = _f(0.0, "The adaptive KL controller never lowers the coefficient below this (0: no "
                            "floor). While KL sits under target_kl early in a run the controller keeps shrinking the "
                            "coefficient, and it then climbs back too slowly to stop KL overshooting.", min=0.0)
    gamma: float = _f(1.0, "Discount.", min=0.0, max=1.0)
    lam: float = _f(0.95, "GAE lambda.", min=0.0, max=1.0)
    whiten_advantages: bool | None = _f(None, "Whiten advantages over each rollout (zero mean, unit spread). None: "
                                       "yes with gae, no with rloo and grpo, whose advantages are centred per "
                                       "prompt already; whitening them would blow the KL noise of a rollout whose "
                                       "rewards all agree (a solved prompt) up to unit size.")
    max_new_tokens: int = _f(128, "Tokens generated per rollout response.", min=1)
    temperature: float = _f(1.0, "Sampling temperature of rollouts.", min=0.0)
    top_p: float = _f(1.0, "Nucleus sampling of rollouts.", min=0.0, max=1.0)
    top_k: int = _f(0, "Sample among the k likeliest tokens in rollouts (0: no limit).", min=0)
    max_prompt_tokens: int | None = _f(None, "Longest prompt in tokens (none: max_length − max_new_tokens).", min=8)
    sample_every: int = _f(10, "Store sample responses in the project every N PPO steps (0: never).", min=0)
    samples_per_store: int = _f(4, "How many responses to store each time.", min=0)
    min_examples: int = _f(4, "Refuse to train on fewer prompts than this.", min=1)

    def validate(self, source: str | None = None) -> None:
        super().validate(source)
        if self.advantage_estimator in GROUP_ESTIMATORS and self.samples_per_prompt < 2:
            raise InputError(f"{self.advantage_estimator} compares responses to the same prompt, so it needs "
                             f"samples_per_prompt of at least 2, not {self.samples_per_prompt}", path=source,
                             field="samples_per_prompt")


@dataclass
class GenerateConfig(ModelConfig):
    """Batched sampling of candidate responses; results are stored with provenance and queued for comparison."""

    prompt_ids: list[int] = _f([], "Generate for these prompts (empty: the prompts of snapshot_id, else every "
                               "training prompt).")
    snapshot_id: int | None = _f(None, "Generate for the prompts this snapshot refers to (when prompt_ids is empty).")
    tag: str | None = _f(None, "Only prompts with this tag.")
    split: str | None = _f(None, "Only prompts of this split, train or heldout (none: train when neither prompt_ids "
                           "nor snapshot_id is given, else both).", choices=SPLITS)
    n_per_prompt: int = _f(2, "Responses sampled per prompt.", min=1)
    temperature: float = _f(0.7, "Sampling temperature (0: greedy).", min=0.0)
    top_p: float = _f(0.9, "Nucleus sampling threshold.", min=0.0, max=1.0)
    top_k: int = _f(50, "Sample among the k most likely tokens (0: no limit).", min=0)
    max_new_tokens: int = _f(256, "Maximum tokens per response.", min=1)
    max_length: int = _f(1024, "Maximum prompt tokens; longer prompts lose their oldest turns.", min=8)
    repetition_penalty: float = _f(1.0, "Above 1 discourages repeating tokens already in the text (1: off).", min=0.01)
    batch_size: int = _f(8, "Sequences generated together.", min=1)
    queue_comparisons: bool = _f(True, "Queue the new responses as comparisons for annotation.")
    compare_with_existing: bool = _f(False, "Also pair each new response with the prompt's earlier responses (not "
                                     "only with the other new ones).")


@dataclass
class EvalConfig(ModelConfig):
    """Evaluate a reward model (adapter_from) on a snapshot: held-out pairwise accuracy."""

    snapshot_id: int | None = _f(None, "Snapshot of comparisons to score (none: the held-out prompts' judgments).")
    batch_size: int = _f(8, "Pairs scored together.", min=1)
    max_length: int = _f(512, "Maximum tokens per conversation.", min=8)


@dataclass
class ScoreConfig(ModelConfig):
    """Score both responses of evaluation comparisons with a reward model: the automatic win rate of a round."""

    reward_model: str = _f("", "The reward model: a reward-model run's output folder (LoRA adapter + head.safetensors) "
                           "or a sequence-classification model folder with one label.")
    base_model: str = _f("", "Base model the reward adapter runs on; empty: the base its adapter_config.json records "
                         "(a full classifier folder needs none).")
    adapter_from: str | None = _f(None, "Not used when scoring (the reward model is reward_model).")
    quantize: str = _f("none", "Scoring loads the reward model unquantised, as PPO's reward-model loader does.",
                       choices=("none",))
    round_id: int | None = _f(None, "Score the comparisons of this evaluation round (none, and no comparison_ids: "
                              "the newest round).", min=1)
    comparison_ids: list[int] = _f([], "Score these comparisons instead of a round's (response_a counts as the "
                                   "first model); each one's reward gap is stored too (the queue's closest-first "
                                   "order).")
    response_ids: list[int] = _f([], "Score these responses, each with its prompt, instead of comparisons (with "
                                 "safety_model: the harmful-output rate).")
    safety_model: str = _f("", "A safety classifier (a safety run's output folder, or a sequence-classification "
                           "model folder) instead of a reward model: each of response_ids is scored with its largest "
                           "category probability.")
    batch_size: int = _f(8, "Responses scored together.", min=1)
    max_length: int = _f(512, "Maximum tokens per conversation; longer ones lose their oldest turns first, never the "
                         "response.", min=8)

    def validate(self, source: str | None = None) -> None:
        super().validate(source)
        if self.safety_model and self.reward_model:
            raise InputError("give a reward model or a safety classifier, not both", path=source, field="safety_model")
        if self.safety_model and not self.response_ids:
            raise InputError("a safety classifier scores responses: give response_ids", path=source,
                             field="response_ids")


EXPORT_FORMATS = ("hf", "gguf", "ollama")
GGUF_QUANTS = ("f16", "q8_0")


@dataclass
class ExportConfig(ModelConfig):
    """Export of a trained adapter, merged into its base, for use outside the app (verified before it is kept)."""

    adapter: str = _f("", "The adapter folder to export (a run's RUN/adapter).")
    output: str = _f("", "The folder to write; it must not exist yet, or be empty. Nothing is left there when the "
                     "export fails.")
    format: str = _f("hf", "hf: the merged model as safetensors with its tokenizer (a reward model or safety "
                     "classifier as a sequence classifier); gguf: one .gguf file for llama.cpp; ollama: the GGUF "
                     "plus a Modelfile.", choices=EXPORT_FORMATS)
    quant: str = _f("f16", "Tensor type of a GGUF: f16, or q8_0 (8-bit blocks, about half the size).",
                    choices=GGUF_QUANTS)
    base_model: str = _f("", "Base model the adapter is merged into; empty: the base the adapter's run recorded.")
    quantize: str = _f("none", "The merge always loads the base unquantised, in full precision (a run trained on a "
                       "4-bit base included).", choices=("none",))
    dtype: str = _f("auto", "Precision of the hf format's weights: auto (the base's own), float32, bfloat16 or "
                    "float16. The merge itself is computed in float32.")
    adapter_from: str | None = _f(None, "Not used by an export (the adapter is 'adapter').")
    check_prompts: int = _f(8, "Prompts the export is checked on: greedy generations of the export must equal base + "
                            "adapter token for token (a classifier: the same scores). The project's prompts when the "
                            "adapter belongs to a project run, else fixed ones.", min=1)
    check_tokens: int = _f(24, "Tokens generated greedily per check prompt.", min=1)
    logit_tolerance: float | None = _f(None, "Largest next-token logit difference allowed between the GGUF read back "
                                       "and the merged model, as a fraction of the merged model's largest logit "
                                       "(none: 0.01 at f16, 0.05 at q8_0).", min=0.0)


CONFIG_CLASSES: dict[str, type[ModelConfig]] = {
    "sft": SftConfig,
    "rm": RewardConfig,
    "safety": SafetyConfig,
    "dpo": DpoConfig,
    "ppo": PpoConfig,
    "generate": GenerateConfig,
    "eval": EvalConfig,
    # The Playground: a long-lived generation job that answers chat commands on stdin (engine/jobs/playground.py).
    "playground": GenerateConfig,
    # Reward-model scores of evaluation responses: the automatic win rate (engine/jobs/score.py).
    "score": ScoreConfig,
    # A trained adapter merged and written as hf, GGUF or Ollama, then verified (engine/export/).
    "export": ExportConfig,
}


def config_class(stage: str) -> type[ModelConfig]:
    try:
        return CONFIG_CLASSES[stage]
    except KeyError:
        raise InputError(f"unknown job kind {stage!r}; one of {', '.join(CONFIG_CLASSES)}") from None


def load_config(stage: str, path: str | os.PathLike[str] | None = None, **overrides: Any) -> ModelConfig:
    """The stage's config from a YAML file (or the defaults), with CLI overrides that are not None applied."""
    cls = config_class(stage)
    cfg = cls.load(path) if path else cls()
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k, v in overrides.items() if v is not None and k not in fields]
    if unknown:
        raise InputError(f"{stage} runs have no setting {unknown[0]!r}", field=unknown[0])
    cfg = cfg.replace(**overrides)
    cfg.validate()
    return cfg
