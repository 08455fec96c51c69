"""Reward-model scores in a project (metric rows of score runs), which folders count as reward models, what a score
job scores and how the automatic win rate and the agreement with the expert are counted; the ``eval winrate``
command line up to starting the job."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.eval_rounds import add_round
from workbench.cli import build_parser
from workbench.cli_train import config_from_args, winrate_summary
from workbench.configs import ScoreConfig
from workbench.errors import InputError
from workbench.evaluation import get_round
from workbench.reward_scores import (
    auto_result,
    auto_round_result,
    check_reward_model,
    reward_model_name,
    reward_model_problem,
    round_items,
    score_gap,
    score_items,
    store_scores,
    stored_scores,
)
from workbench.store import Project


def write_head(folder: Path, *, kind: str = "reward", out_features: int = 1) -> None:
    """A head.safetensors as HeadedModel.save_head writes it (weights zero; only the header matters here)."""
    hidden = 4
    header = {"__metadata__": {"kind": kind, "labels": "[]", "hidden_size": str(hidden),
                               "out_features": str(out_features)},
              "bias": {"dtype": "F32", "shape": [out_features], "data_offsets": [0, 4 * out_features]},
              "weight": {"dtype": "F32", "shape": [out_features, hidden],
                         "data_offsets": [4 * out_features, 4 * out_features * (1 + hidden)]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (folder / "head.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(4 * out_features * (1 + hidden)))


def adapter_folder(root: Path, name: str, *, with_head: bool = True, **head) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    if with_head:
        write_head(d, **head)
    return d


def test_which_folders_are_reward_models(tmp_path):
    good = adapter_folder(tmp_path, "rm")
    assert reward_model_problem(good) is None and check_reward_model(good) == good
    assert "no such folder" in reward_model_problem(tmp_path / "missing")
    assert reward_model_problem("") == "no reward model chosen"
    assert "head.safetensors" in reward_model_problem(adapter_folder(tmp_path, "sft", with_head=False))
    assert "safety" in reward_model_problem(adapter_folder(tmp_path, "safety", kind="safety", out_features=3))
    (tmp_path / "file.txt").write_text("x")
    assert reward_model_problem(tmp_path / "file.txt") == "not a folder"
    (tmp_path / "empty").mkdir()
    assert "not a reward model folder" in reward_model_problem(tmp_path / "empty")
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert "not a reward model" in reward_model_problem(lm)
    clf = tmp_path / "clf"
    clf.mkdir()
    (clf / "config.json").write_text(json.dumps({"architectures": ["DebertaV2ForSequenceClassification"],
                                                 "num_labels": 1}))
    assert reward_model_problem(clf) is None
    (clf / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"], "num_labels": 3}))
    assert "3 labels" in reward_model_problem(clf)
    with pytest.raises(InputError, match=r"^reward_model .*missing: no such folder"):
        check_reward_model(tmp_path / "missing")


def test_round_items_put_model_a_first_and_orient_the_verdicts(project):
    rnd = add_round(project, "/models/base", judge=2)
    items = round_items(project, rnd)
    assert len(items) == 6
    for it in items:
        assert project.get_response(it.first).adapter is None
        assert project.get_response(it.second).adapter == "/models/tuned-adapter"
    # the expert preferred model B on the first two pairs, whichever side B was stored on
    assert [it.verdict for it in items] == ["second", "second", None, None, None, None]
    same_round, same = score_items(project)  # the newest round by default
    assert same_round.id == rnd.id and same == items
    with pytest.raises(InputError, match="round_id: no evaluation round 7"):
        score_items(project, round_id=7)
    cid = items[0].comparison_id
    _, by_id = score_items(project, comparison_ids=[cid])
    row = project.get_comparison(cid)
    assert (by_id[0].first, by_id[0].second) == (row.response_a, row.response_b)
    with pytest.raises(InputError, match="comparison_ids: no comparison with id 999"):
        score_items(project, comparison_ids=[cid, 999])


def test_no_round_is_an_input_error(project):
    with pytest.raises(InputError, match="no evaluation round to score"):
        score_items(project)


def _score_run(project: Project, folder: str, status: str, scores: dict[int, float]) -> int:
    run_id = project.create_run("score", ScoreConfig(reward_model=folder).to_dict())
    store_scores(project, run_id, scores)
    project.update_run(run_id, status=status)
    return run_id


def test_scores_are_read_back_per_reward_model_newest_run_first(project, tmp_path):
    rnd = add_round(project, "/models/base", judge=3)
    items = round_items(project, rnd)
    rm = str(adapter_folder(tmp_path, "rm"))
    other = str(adapter_folder(tmp_path, "other"))
    # B scores higher on 4 pairs, lower on 1, equal on 1 (a tie); then a later run changes one score
    first_scores = {}
    for k, it in enumerate(items):
        a, b = {0: (0.0, 1.0), 1: (0.0, 2.0), 2: (1.0, 0.5), 3: (0.3, 0.3), 4: (-1.0, 0.0), 5: (0.0, 0.1)}[k]
        first_scores[it.first], first_scores[it.second] = a, b
    _score_run(project, rm, "done", first_scores)
    _score_run(project, rm, "failed", {it.first: 99.0 for it in items})       # a failed run counts for nothing
    _score_run(project, other, "done", {it.first: 99.0 for it in items})      # another reward model
    _score_run(project, rm + "/../rm", "cancelled", {items[5].first: 0.5})    # same folder, partial, newer: wins
    scores = stored_scores(project, rm)
    assert len(scores) == 12 and scores[items[5].first] == 0.5 and scores[items[0].first] == 0.0

    res = auto_round_result(project, get_round(project, rnd.id), rm)
    # model A: loses 0, 1, 4; wins 2 and (after the later run) 5; ties 3
    assert (res.win.wins, res.win.losses, res.win.ties) == (2, 3, 1)
    assert res.win.rate == pytest.approx(2.5 / 6)
    assert 0 < res.win.low < res.win.rate < res.win.high < 1
    # the expert chose B on items 0-2: the reward model agrees on 0 and 1, not on 2
    assert (res.agree, res.judged) == (2, 3) and (res.scored, res.unscored) == (6, 0)
    assert res.reward_model.endswith("/rm")


def test_auto_result_leaves_out_unscored_pairs():
    from workbench.reward_scores import ScoreItem

    items = [ScoreItem(1, 1, 10, 11, "first"), ScoreItem(2, 2, 20, 21, None), ScoreItem(3, 3, 30, 31, "tie")]
    res = auto_result(items, {10: 2.0, 11: 1.0, 30: 0.0, 31: 0.0, 20: 5.0})
    assert (res.win.wins, res.win.losses, res.win.ties, res.scored, res.unscored) == (1, 0, 1, 2, 1)
    assert (res.agree, res.judged) == (1, 1)  # a tie verdict says nothing about agreement
    assert auto_result(items, {}).win.n == 0


def test_reward_model_names(project, tmp_path):
    out = tmp_path / "runs" / "5"
    adapter_folder(out, "adapter")
    run_id = project.create_run("rm", {}, name="first rm", output_dir=str(out))
    project.update_run(run_id, status="done")
    assert reward_model_name(out / "adapter", project) == f"run {run_id} · Reward model · first rm"
    assert reward_model_name(tmp_path / "x" / "rm") == "x/rm"


def test_eval_winrate_command_line(project_path, tmp_path, capsys):
    rm = adapter_folder(tmp_path, "rm")
    args = build_parser().parse_args(["eval", "winrate", str(project_path), "--reward-model", str(rm / ".." / "rm"),
                                      "--round", "3", "--batch-size", "4"])
    cfg = config_from_args(args)
    assert isinstance(cfg, ScoreConfig)
    assert (cfg.reward_model, cfg.round_id, cfg.batch_size) == (str(rm.resolve()), 3, 4)
    assert cfg.num_threads and cfg.base_model == ""
    # a folder that is not a reward model: refused before any run exists; the JSON summary comes last
    Project.create(project_path).close()
    from workbench.cli import main

    code = main(["eval", "winrate", str(project_path), "--reward-model", str(tmp_path / "nope"), "--quiet"])
    assert code == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["status"] == "failed" and "no such folder" in last["error"] and last["run_id"] is None
    with Project.open(project_path) as p:
        assert p.runs() == []
    assert winrate_summary(None, error="x") == {"run_id": None, "status": "failed", "error": "x"}


def test_score_gap_of_two_responses_by_the_newest_reward_model_that_scored_both(project, tmp_path):
    pid, _ = project.add_prompt([{"role": "user", "content": "q"}])
    a, _ = project.add_response(pid, "x")
    b, _ = project.add_response(pid, "y")
    assert score_gap(project, a, b) is None
    rm, other = str(adapter_folder(tmp_path, "rm")), str(adapter_folder(tmp_path, "other"))
    _score_run(project, rm, "done", {a: 0.25, b: 1.0})
    assert score_gap(project, a, b).gap == pytest.approx(0.75)
    _score_run(project, rm, "done", {b: 0.5})  # a later run of the same model re-scores one response
    assert score_gap(project, b, a).gap == pytest.approx(0.25)
    _score_run(project, other, "done", {a: 3.0})  # a newer model that scored only one of them does not count
    _score_run(project, other, "failed", {a: 3.0, b: 0.0})  # nor a failed run
    gap = score_gap(project, a, b)
    assert gap.gap == pytest.approx(0.25) and gap.reward_model.endswith("rm")
