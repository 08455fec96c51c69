"""Where the project stands in the loop, and the next step: what the Overview page shows and offers as a button.

    generate ─► judge / write ─► train a reward model ─► PPO or DPO ─► blind comparison ─► next round ─► …

:func:`loop_state` reads the counts (the trigger-kept counters, so it stays fast on a big project) and the newest
finished run of each stage with the figure that says what it achieved; :func:`next_steps` turns that into the
steps that make sense now, the recommended one first. Each step names an action the window maps to a page or a
job (:data:`ACTIONS`). Qt-free, so the rules are tested without a window.

The rules, in order:

1. blind pairs of an evaluation round wait → judge them (the round's win rate needs them);
2. fewer than :data:`PAIRS_FOR_REWARD_MODEL` judged training pairs and pairs pending → judge;
3. enough judged pairs and no reward model yet, or :data:`RETRAIN_AFTER` more judged since the newest one →
   train a reward model;
4. a reward model newer than the newest policy run (PPO or DPO) → run PPO with it (DPO is offered beside);
5. a tuned run that no evaluation round has compared yet → compare it blind against its base;
6. otherwise, with a tuned model → generate the next round from it; without one and nothing pending → generate
   candidates from the base model.

Writing demonstrations is offered beside whenever pairs were judged "both bad" and lack a good answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .eval_round import TUNED_STAGES
from .evaluation import round_result, rounds
from .run_choices import RunChoice, run_choice
from .run_report import short_model
from .store import Project
from .train_checks import done_runs

PAIRS_FOR_REWARD_MODEL = 20
RETRAIN_AFTER = 50
GUIDELINES_SHOWN = "guidelines.shown"
RANK_MIN_RESPONSES = 3

# action → (button text, page the window opens or the job it starts)
ACTIONS: dict[str, str] = {
    "judge": "Judge pairs",
    "judge_eval": "Judge the blind pairs",
    "write": "Write better answers",
    "train_rm": "Train a reward model",
    "train_ppo": "Run PPO with the reward model",
    "train_dpo": "Run DPO",
    "blind_compare": "Compare blind against the base",
    "next_round": "Generate the next round",
    "generate": "Generate candidates",
}


@dataclass
class LoopState:
    counts: dict[str, int]
    latest: dict[str, RunChoice]            # stage → newest finished run
    eval_pending: int                      # blind pairs of evaluation rounds waiting
    judged_since_rm: int                   # judgments made after the newest reward model was started
    round_text: str = ""                   # the newest round's win rate, in words
    compared_adapters: set[str] = field(default_factory=set)  # adapters some round already compared (model B)
    both_bad: int = 0                      # prompts judged "both bad" still lacking a good answer
    eval_source: str | None = None         # the source of the newest round with blind pairs waiting

    @property
    def judged_pairs(self) -> int:
        return self.counts["judged"]

    @property
    def newest_tuned(self) -> RunChoice | None:
        tuned = [self.latest[s] for s in TUNED_STAGES if s in self.latest]
        return max(tuned, key=lambda r: r.run_id, default=None)


@dataclass(frozen=True)
class Step:
    action: str
    why: str

    @property
    def title(self) -> str:
        return ACTIONS[self.action]


def loop_state(project: Project) -> LoopState:
    """The counts and the newest finished run of each stage (see the module docstring)."""
    stats = project.stats()
    counts = {k: stats[k] for k in ("prompts", "heldout_prompts", "responses", "judged", "pending", "rankings",
                                     "demonstrations", "flags", "runs")}
    latest: dict[str, RunChoice] = {}
    for run in done_runs(project):
        current = latest.get(run["stage"])
        if current is None or run["id"] > current.run_id:
            latest[run["stage"]] = run_choice(run)
    rm = latest.get("rm")
    judged_since = project.judged_since(project.get_run(rm.run_id)["created_at"]) if rm else stats["judged"]
    all_rounds = rounds(project)
    round_text = ""
    if all_rounds:
        res = round_result(project, all_rounds[-1])
        w = res.a
        if w.n:
            a, b = short_model(res.round.model_a.name), short_model(res.round.model_b.name)
            round_text = (f"round {res.round.id}: {b} wins {1 - w.rate:.0%} (95% CI {1 - w.high:.0%}–{1 - w.low:.0%}) "
                          f"against {a}, {w.n} judged")
        else:
            round_text = f"round {res.round.id}: {res.pending} blind pair(s) waiting"
    both_bad = sum(1 for pid in project.both_bad_prompt_ids() if project.lacks_good_answer(pid))
    waiting = next((r.source for r in reversed(all_rounds) if round_result(project, r).pending), None)
    return LoopState(counts, latest, project.pending_count("eval"), judged_since, round_text,
                     {r.model_b.adapter for r in all_rounds if r.model_b.adapter}, both_bad, waiting)


def next_steps(state: LoopState) -> list[Step]:
    """The steps that make sense now, the recommended one first (see the module docstring)."""
    steps: list[Step] = []
    pending_train = state.counts["pending"] - state.eval_pending
    rm, tuned = state.latest.get("rm"), state.newest_tuned
    policy = max((state.latest[s] for s in ("ppo", "dpo") if s in state.latest), key=lambda r: r.run_id, default=None)
    if state.eval_pending:
        steps.append(Step("judge_eval", f"{state.eval_pending} blind pair(s) of an evaluation round wait for your "
                                        "verdict"))
    if pending_train and state.judged_pairs < PAIRS_FOR_REWARD_MODEL:
        steps.append(Step("judge", f"{state.judged_pairs} pair(s) judged; a reward model wants at least "
                                   f"{PAIRS_FOR_REWARD_MODEL} ({pending_train} waiting)"))
    if state.judged_pairs >= PAIRS_FOR_REWARD_MODEL and (rm is None or state.judged_since_rm >= RETRAIN_AFTER):
        steps.append(Step("train_rm", f"{state.judged_pairs} judged pair(s) and no reward model yet" if rm is None
                          else f"{state.judged_since_rm} judgment(s) since {rm.short_label}"))
    if rm is not None and (policy is None or policy.run_id < rm.run_id):
        steps.append(Step("train_ppo", f"{rm.short_label} ({rm.headline or 'finished'}) has not trained a policy yet"))
        steps.append(Step("train_dpo", "or train on the judged pairs directly, without the reward model"))
    if tuned is not None and tuned.folder not in state.compared_adapters:
        steps.append(Step("blind_compare", f"{tuned.short_label} has not been compared blind with its base"))
    if tuned is not None:
        steps.append(Step("next_round", f"new candidates from {tuned.short_label} for training prompts with nothing "
                                        "pending"))
    elif not state.counts["pending"]:
        steps.append(Step("generate", "nothing to judge: generate candidate responses from the base model"))
    if pending_train and not any(s.action == "judge" for s in steps):
        steps.append(Step("judge", f"{pending_train} pair(s) waiting on the Compare page"))
    if state.both_bad:
        steps.append(Step("write", f"{state.both_bad} prompt(s) judged both bad lack a good answer"))
    return steps


def rank_needs_generate(project: Project) -> bool:
    """Whether ranking has nothing to work on because no prompt has three or more responses (the Rank page then
    points to Generate)."""
    return not project.has_prompt_with_responses(RANK_MIN_RESPONSES)


def first_open(project: Project) -> bool:
    """True the first time a project is opened in the window (its guidelines are shown then); marks it as seen
    (a read-only project is left as it is)."""
    if project.meta(GUIDELINES_SHOWN):
        return False
    if not project.read_only:
        project.set_meta(GUIDELINES_SHOWN, "1")
    return True

