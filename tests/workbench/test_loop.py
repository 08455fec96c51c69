"""The loop in the core: the runs offered by the pickers and PPO's default reward model, where the project stands and
the next step, the held-out split, the next round's prompts and model, the queue's closest-first order, and the
safety outcomes' choice of prompts and threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.workbench.test_reward_scores import adapter_folder
from workbench.cli import build_parser, main
from workbench.cli_train import _prepared, config_from_args
from workbench.configs import GenerateConfig, PpoConfig
from workbench.errors import InputError
from workbench.evaluation import ModelRef, new_round, pair_round
from workbench.loop import first_open, loop_state, next_steps, rank_needs_generate
from workbench.next_round import next_round_config, record_round
from workbench.queue import AnnotationQueue, QueueConfig, gap_run, queue_order, scored_pending, set_queue_order
from workbench.reward_scores import GAP_KEY, SCORE_STAGE, ScoreItem, store_gaps
from workbench.run_choices import choice_for_folder, newest_choice, run_choices, with_default_reward_model
from workbench.safety_eval import RateResult, harm_prompts, safety_threshold
from workbench.splits import back_to_training, hold_out, hold_out_share
from workbench.store import Project


def finished(project: Project, stage: str, root: Path, *, name: str = "", metrics: dict | None = None,
             head: str | None = "reward", base: str = "/models/base") -> tuple[int, Path]:
    """A finished run of ``stage`` whose output folder holds an adapter (with a head of kind ``head``)."""
    run_id = project.create_run(stage, {}, name=name, base_model=base)
    out = root / f"run{run_id}"
    if head is None:
        adapter_folder(out, "adapter", with_head=False)
    else:
        adapter_folder(out, "adapter", kind=head, out_features=1 if head == "reward" else 3)
    project.update_run(run_id, status="done", output_dir=str(out), final_metrics=metrics or {})
    return run_id, out / "adapter"


def pairs(project: Project, n: int, *, judged: int = 0, split: str = "train", source: str = "s") -> list[int]:
    ids = []
    for i in range(n):
        pid, _ = project.add_prompt([{"role": "user", "content": f"{source} question {i}"}], split=split, source=source)
        a, _ = project.add_response(pid, f"answer a {i}")
        b, _ = project.add_response(pid, f"answer b {i}")
        cid = project.add_comparison(pid, a, b, source=source)
        if i < judged:
            project.judge(cid, "a", strength="clear")
        ids.append(cid)
    return ids


# ---------------------------------------------------------------------------------------------- pickers
def test_run_choices_list_finished_runs_of_the_role_newest_first(project, tmp_path):
    rm1, rm1_dir = finished(project, "rm", tmp_path, name="first", metrics={"train/accuracy": 0.75})
    rm2, rm2_dir = finished(project, "rm", tmp_path, metrics={"eval/accuracy": 0.8, "train/accuracy": 0.9})
    sft, sft_dir = finished(project, "sft", tmp_path, head=None, metrics={"train/loss": 1.5})
    safety, safety_dir = finished(project, "safety", tmp_path, head="safety")
    failed = project.create_run("rm", {})
    project.update_run(failed, status="failed")
    choices = run_choices(project, "reward_model")
    assert [c.run_id for c in choices] == [rm2, rm1]
    assert choices[0].headline == "held-out pair accuracy 0.8" and choices[1].headline == "pair accuracy 0.75"
    assert choices[1].label.startswith(f"run {rm1} · Reward model · first · ") and "pair accuracy 0.75" in choices[1].label
    assert [c.run_id for c in run_choices(project, "adapter")] == [sft]
    assert [c.run_id for c in run_choices(project, "safety_model")] == [safety]  # its head is not a reward model's
    assert newest_choice(project, "reward_model").folder == str(rm2_dir)
    assert choice_for_folder(project, str(sft_dir / ".." / "adapter")).run_id == sft
    assert choice_for_folder(project, str(tmp_path / "elsewhere")) is None


def test_ppo_without_a_reward_model_takes_the_newest_and_says_which(project, tmp_path, project_path, capsys):
    with pytest.raises(InputError, match="no finished reward-model run"):
        with_default_reward_model(project, PpoConfig())
    _, older = finished(project, "rm", tmp_path)
    rm, newest = finished(project, "rm", tmp_path, name="latest")
    cfg, note = with_default_reward_model(project, PpoConfig())
    assert cfg.reward_model == str(newest) and f"run {rm} · Reward model · latest" in note
    given, none = with_default_reward_model(project, PpoConfig(reward_model=str(older)))
    assert given.reward_model == str(older) and none is None
    # the command line takes the same run, before any worker starts
    args = build_parser().parse_args(["train", "ppo", str(project_path)])
    cfg = _prepared(args, "ppo", config_from_args(args))
    assert cfg.reward_model == str(newest) and "the newest finished reward-model run" in capsys.readouterr().err


def test_ppo_command_without_any_reward_model_is_refused_before_a_run_exists(project_path, capsys):
    Project.create(project_path).close()
    code = main(["train", "ppo", str(project_path), "--quiet"])
    out = capsys.readouterr()
    assert code == 1 and "no finished reward-model run" in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["status"] == "failed"
    with Project.open(project_path) as p:
        assert p.runs() == []


# ---------------------------------------------------------------------------------------------- the loop
def test_next_step_follows_the_loop(project, tmp_path):
    pairs(project, 25, judged=5)
    state = loop_state(project)
    assert state.counts["judged"] == 5 and next_steps(state)[0].action == "judge"
    for c in project.comparisons()[5:22]:
        project.judge(c.id, "b")
    state = loop_state(project)
    assert [s.action for s in next_steps(state)][:2] == ["train_rm", "judge"]
    rm, _ = finished(project, "rm", tmp_path, metrics={"train/accuracy": 0.9})
    steps = [s.action for s in next_steps(loop_state(project))]
    assert steps[:2] == ["train_ppo", "train_dpo"] and "train_rm" not in steps
    ppo, ppo_dir = finished(project, "ppo", tmp_path, head=None, metrics={"rollout/score_mean": 0.4})
    state = loop_state(project)
    assert state.latest["ppo"].headline == "reward 0.4" and state.latest["rm"].run_id == rm
    assert [s.action for s in next_steps(state)][:2] == ["blind_compare", "next_round"]
    # a round compared the PPO run: its blind pairs come first, then the next round
    pid, _ = project.add_prompt([{"role": "user", "content": "held out"}], split="heldout")
    a, _ = project.add_response(pid, "base answer", origin="model", model="/models/base")
    b, _ = project.add_response(pid, "tuned answer", origin="model", model="/models/base", adapter=str(ppo_dir))
    rnd = new_round(project, ModelRef("/models/base"), ModelRef("/models/base", str(ppo_dir)), [pid])
    assert pair_round(project, rnd)["queued"] == 1
    state = loop_state(project)
    steps = [s.action for s in next_steps(state)]
    assert steps[0] == "judge_eval" and "blind_compare" not in steps and "next_round" in steps
    assert state.eval_source == rnd.source
    project.judge(project.comparisons(kind="eval")[0].id, "b")
    state = loop_state(project)
    assert next_steps(state)[0].action == "next_round" and "wins" in state.round_text and state.eval_source is None


def test_an_empty_project_starts_by_generating_and_rank_points_there(project):
    project.add_prompt([{"role": "user", "content": "q"}])
    assert [s.action for s in next_steps(loop_state(project))] == ["generate"]
    assert rank_needs_generate(project)
    pid = project.prompt_ids()[0]
    for t in ("one", "two", "three"):
        project.add_response(pid, t)
    assert not rank_needs_generate(project)


def test_guidelines_show_on_the_first_open_only(project_path):
    with Project.create(project_path) as p:
        assert first_open(p) and not first_open(p)
    with Project.open(project_path) as p:
        assert not first_open(p)


# ---------------------------------------------------------------------------------------------- held out
def test_hold_out_one_by_one_and_a_seeded_share_leaving_trained_prompts(project):
    pairs(project, 20, judged=4)
    ids = project.prompt_ids()
    from workbench.training_data import preference_snapshot

    sid = preference_snapshot(project)
    project.create_run("rm", {}, snapshot_id=sid)
    trained = project.prompts_in_training_snapshots()
    assert trained == set(ids[:4])
    change = hold_out(project, [ids[0], ids[10]])
    assert (change.moved, change.trained) == (1, 1) and "left in training" in change.text()
    assert project.get_prompt(ids[0]).split == "train" and project.get_prompt(ids[10]).split == "heldout"
    forced = hold_out(project, [ids[0]], include_trained=True)
    assert forced.moved == 1 and "optimistic" in forced.text()
    assert back_to_training(project, [ids[0], ids[10]]).moved == 2

    draw = hold_out_share(project, 0.25, seed=3)
    held = set(project.prompt_ids(split="heldout"))
    assert draw.moved == len(held) == 5 and not held & trained and draw.trained == 4
    back_to_training(project, list(held))
    assert hold_out_share(project, 0.25, seed=3).moved == 5 and set(project.prompt_ids(split="heldout")) == held
    with pytest.raises(InputError):
        hold_out_share(project, 0)


# ---------------------------------------------------------------------------------------------- next round
def test_next_round_takes_the_newest_tuned_model_and_rotates_through_free_prompts(project, tmp_path):
    free = []
    for i in range(5):
        pid, _ = project.add_prompt([{"role": "user", "content": f"free {i}"}])
        free.append(pid)
    busy = pairs(project, 2)  # prompts with pending pairs are left alone
    project.add_prompt([{"role": "user", "content": "held"}], split="heldout")
    base_round = next_round_config(project, limit=3)
    assert base_round.config.adapter_from is None and "no tuned run yet" in base_round.model
    sft, sft_dir = finished(project, "sft", tmp_path, head=None, name="polite", base="/models/tiny")
    nxt = next_round_config(project, limit=3, temperature=0.5)
    cfg = nxt.config
    assert (cfg.base_model, cfg.adapter_from) == ("/models/tiny", str(sft_dir)) and f"run {sft}" in nxt.description
    assert cfg.prompt_ids == free[:3] and cfg.queue_comparisons and cfg.n_per_prompt == 2 and cfg.temperature == 0.5
    record_round(project, nxt)
    again = next_round_config(project, limit=3)
    assert again.config.prompt_ids == [*free[3:], free[0]] and again.config.seed != cfg.seed
    assert not set(again.config.prompt_ids) & {project.get_comparison(c).prompt_id for c in busy}
    for pid in free:
        a, _ = project.add_response(pid, "x")
        b, _ = project.add_response(pid, "y")
        project.add_comparison(pid, a, b)
    with pytest.raises(InputError, match="already has pairs waiting"):
        next_round_config(project)


def test_generate_next_round_command_builds_the_same_config(project_path, capsys):
    with Project.create(project_path) as p:
        for i in range(4):
            p.add_prompt([{"role": "user", "content": f"q{i}"}])
    args = build_parser().parse_args(["generate", str(project_path), "--next-round", "--limit", "2", "--n", "3"])
    cfg = _prepared(args, "generate", config_from_args(args))
    assert isinstance(cfg, GenerateConfig) and len(cfg.prompt_ids) == 2 and cfg.n_per_prompt == 3
    assert "next round: 3 candidates each for 2 training prompt(s)" in capsys.readouterr().err
    with Project.open(project_path) as p:
        assert next_round_config(p, limit=2).config.prompt_ids == [3, 4]  # the command recorded where it stopped


# ---------------------------------------------------------------------------------------------- queue order
def _score_gaps(project: Project, comparison_ids: list[int], gaps: list[float]) -> int:
    run_id = project.create_run(SCORE_STAGE, {"reward_model": "/rm"})
    scores = {}
    items = []
    for cid, gap in zip(comparison_ids, gaps):
        c = project.get_comparison(cid)
        scores[c.response_a], scores[c.response_b] = 1.0, 1.0 - gap
        items.append(ScoreItem(cid, c.prompt_id, c.response_a, c.response_b, None))
    assert store_gaps(project, run_id, items, scores) == len(items)
    project.update_run(run_id, status="done")
    return run_id


def test_closest_first_serves_the_smallest_reward_gaps_then_the_rest(project):
    ids = pairs(project, 6)
    ids += pairs(project, 2, source="other")
    run_id = _score_gaps(project, ids[:4], [0.9, 0.1, 0.5, 0.1])
    assert gap_run(project) == run_id and scored_pending(project) == (4, 8)
    assert queue_order(project) == "id"
    q = AnnotationQueue(project, QueueConfig(retest_share=0))
    assert q.next().id == ids[0]
    set_queue_order(project, "closest")
    assert q.next().id == ids[1]  # switched: the order starts again, closest first
    served = [ids[1]] + [q.next().id for _ in range(7)]
    assert served == [ids[1], ids[3], ids[2], ids[0], ids[4], ids[5], ids[6], ids[7]]
    # judged pairs leave the order; filters apply
    project.judge(ids[1], "a")
    q = AnnotationQueue(project, QueueConfig(retest_share=0, order="closest", source="s"))
    assert [q.next().id for _ in range(4)] == [ids[3], ids[2], ids[0], ids[4]]
    with pytest.raises(InputError):
        set_queue_order(project, "random")


# ---------------------------------------------------------------------------------------------- safety outcomes
def test_harm_prompts_are_held_out_else_a_seeded_sample_and_the_threshold_comes_from_the_run(project, tmp_path):
    train = [project.add_prompt([{"role": "user", "content": f"t{i}"}])[0] for i in range(80)]
    ids, kind = harm_prompts(project)
    assert kind == "train-sample" and len(ids) == 50 and set(ids) <= set(train) and harm_prompts(project)[0] == ids
    assert harm_prompts(project, 5)[0] == harm_prompts(project, 5)[0] and len(harm_prompts(project, 5)[0]) == 5
    held = [project.add_prompt([{"role": "user", "content": f"h{i}"}], split="heldout")[0] for i in range(3)]
    assert harm_prompts(project) == (held, "heldout")

    folder = tmp_path / "run" / "adapter"
    folder.mkdir(parents=True)
    assert safety_threshold(folder) == 0.5
    (folder.parent / "config.yaml").write_text("threshold: 0.3\n")
    assert safety_threshold(folder) == 0.3
    (folder / "config.yaml").write_text("# SafetyConfig\nthreshold: 0.7\n")
    assert safety_threshold(folder) == 0.7

    res = RateResult("done", "m", "heldout", k=3, n=10, threshold=0.5)
    d = res.to_dict()
    assert d["rate"] == 0.3 and 0 < d["interval"][0] < 0.3 < d["interval"][1] < 1 and d["prompts"] == "heldout"
    assert RateResult("failed", "m", "heldout", error="boom").to_dict()["rate"] is None
