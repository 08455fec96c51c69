"""The ``score`` job in-process on a tiny reward model: its stored scores equal scoring the same conversations one by
one with the HeadedModel directly, the win rate counts those scores right, and bad input leaves the project alone."""

from __future__ import annotations

import io

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.reward_model import HeadedModel
from engine.rm_data import ChatEncoder
from engine.worker import run as run_worker
from tests.eval_rounds import add_round, build_reward_model
from workbench.configs import ScoreConfig
from workbench.evaluation import get_round
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.reward_scores import SCORE_KEY, auto_round_result, round_items, stored_scores
from workbench.store import Project

MAX_LEN = 96


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory):
    return build_reward_model(tiny_model_dir, tmp_path_factory.mktemp("rm") / "adapter")


@pytest.fixture
def round_project(project_path, tiny_model_dir):
    with Project.create(project_path) as p:
        rnd = add_round(p, str(tiny_model_dir), judge=3)
    return project_path, rnd.id


def run_score(project_path, cfg: ScoreConfig):
    run_id, run_dir = JobClient(project_path).prepare("score", cfg)
    buf = io.StringIO()
    code = run_worker(run_dir, stdout=buf, own_process=False)
    events = [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]
    return run_id, code, events


def direct_scores(tiny_model_dir, reward_dir, rows) -> dict[int, float]:
    """Each (response id, messages, text) scored alone (no padding) with the HeadedModel."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    hm = HeadedModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    hm.load_adapter("reward", reward_dir)
    hm.eval()
    enc = ChatEncoder(tok, MAX_LEN)
    out = {}
    with torch.no_grad():
        for rid, messages, text in rows:
            p, r, _ = enc.encode_single(messages, text)
            ids = torch.tensor([p + r])
            out[rid] = float(hm.score("reward", ids, torch.ones_like(ids))[0, 0])
    return out


def test_score_job_matches_the_headed_model_and_counts_the_win_rate(tiny_model_dir, reward_dir, round_project):
    path, round_id = round_project
    cfg = ScoreConfig(reward_model=str(reward_dir), round_id=round_id, batch_size=4, max_length=MAX_LEN, device="cpu",
                      num_threads=1)
    run_id, code, events = run_score(path, cfg)
    assert code == 0, [e.data for e in events if e.type.value == "error"]
    progress = [e for e in events if e.type.value == "progress"]
    assert progress[-1].step == progress[-1].data["total"] == 12  # 6 pairs, 12 responses, batches of 4
    assert len(progress) == 1 + 3
    done = [e for e in events if e.type.value == "done"][-1].data
    summary = done["summary"]

    with Project.open(path) as p:
        rnd = get_round(p, round_id)
        items = round_items(p, rnd)
        rows = [(rid, p.get_prompt(p.get_response(rid).prompt_id).messages, p.get_response(rid).content)
                for it in items for rid in (it.first, it.second)]
        stored = stored_scores(p, reward_dir)
        assert set(stored) == {r[0] for r in rows}
        # one metric row per scored response, on this run
        assert len(p.metrics(run_id, SCORE_KEY)) == 12
        expected = direct_scores(tiny_model_dir, reward_dir, rows)
        for rid, value in expected.items():
            assert stored[rid] == pytest.approx(value, abs=1e-4), rid

        wins = sum(expected[it.first] > expected[it.second] for it in items)
        losses = sum(expected[it.first] < expected[it.second] for it in items)
        assert (summary["wins"], summary["losses"], summary["ties"]) == (wins, losses, 6 - wins - losses)
        assert summary["win_rate"] == pytest.approx((wins + (6 - wins - losses) / 2) / 6)
        assert 0.0 <= summary["win_rate_low"] <= summary["win_rate"] <= summary["win_rate_high"] <= 1.0
        # the expert preferred B on the 3 judged pairs: the reward model agrees where it also prefers B
        agree = sum(expected[it.second] > expected[it.first] for it in items if it.verdict is not None)
        assert (summary["agree"], summary["judged"]) == (agree, 3)
        res = auto_round_result(p, rnd, reward_dir)
        assert (res.win.wins, res.win.losses, res.scored, res.unscored) == (wins, losses, 6, 0)
        assert done["final_metrics"]["score/wins"] == wins
        assert p.get_run(run_id)["status"] == "done"


def _unchanged(path, run_id, before):
    with Project.open(path) as p:
        assert p.get_run(run_id)["status"] == "failed"
        assert not any(p.metrics(r["id"], SCORE_KEY) for r in p.runs())
        # only the run row itself (made by the client before the worker starts) is new
        assert {k: v for k, v in p.stats().items() if k != "runs"} == {k: v for k, v in before.items() if k != "runs"}


@pytest.mark.parametrize("case", ["missing", "sft_adapter", "not_a_model", "no_round"])
def test_bad_input_gives_one_clear_error_and_no_scores(case, tiny_model_dir, reward_dir, round_project, tmp_path):
    path, round_id = round_project
    folder, expect = str(reward_dir), ""
    if case == "missing":
        folder, expect = str(tmp_path / "nowhere"), "no such folder"
    elif case == "sft_adapter":
        # an adapter without a scalar head (an SFT run's output)
        sft = tmp_path / "sft"
        sft.mkdir()
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            (sft / f).write_bytes((reward_dir / f).read_bytes())
        folder, expect = str(sft), "head.safetensors"
    elif case == "not_a_model":
        folder, expect = str(tiny_model_dir), "not a reward model"
    else:
        round_id, expect = 99, "no evaluation round 99"
    with Project.open(path) as p:
        before = p.stats()
    run_id, code, events = run_score(path, ScoreConfig(reward_model=folder, round_id=round_id, device="cpu",
                                                       max_length=MAX_LEN))
    assert code == 1
    errors = [e.data["message"] for e in events if e.type.value == "error"]
    assert len(errors) == 1 and expect in errors[0], errors
    assert "reward_model" in errors[0] or "round_id" in errors[0]
    _unchanged(path, run_id, before)


def test_eval_winrate_command_runs_the_job_and_prints_json_last(tiny_model_dir, reward_dir, round_project, capsys):
    import json

    from workbench.cli import main

    path, round_id = round_project
    code = main(["eval", "winrate", str(path), "--reward-model", str(reward_dir), "--max-length", str(MAX_LEN),
                 "--threads", "1", "--quiet"])  # no --round: the newest round
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out
    summary = json.loads(out[-1])
    assert summary["status"] == "done" and summary["round_id"] == round_id
    assert summary["model_a"] == "parent" and summary["model_b"] == "tuned" and summary["n"] == 6
    assert summary["wins"] + summary["losses"] + summary["ties"] == 6 and summary["judged"] == 3
    assert summary["b_win_rate"] == pytest.approx(1 - summary["win_rate"])
    assert summary["reward_model_path"] == str(reward_dir.resolve())
    with Project.open(path) as p:
        res = auto_round_result(p, get_round(p, round_id), reward_dir)
    assert (res.win.wins, res.win.losses) == (summary["wins"], summary["losses"])


def test_pending_pairs_get_their_reward_gap_for_the_closest_first_queue(tiny_model_dir, reward_dir, project_path):
    from tests.workbench.test_loop import pairs
    from workbench.queue import AnnotationQueue, QueueConfig, set_queue_order
    from workbench.reward_scores import GAP_KEY, run_scores

    with Project.create(project_path) as p:
        ids = pairs(p, 5)
    run_id, code, events = run_score(project_path, ScoreConfig(reward_model=str(reward_dir), comparison_ids=ids[:4],
                                                               device="cpu", max_length=MAX_LEN, num_threads=1))
    assert code == 0, [e.data for e in events if e.type.value == "error"]
    with Project.open(project_path) as p:
        scores, gaps = run_scores(p, run_id, SCORE_KEY), run_scores(p, run_id, GAP_KEY)
        assert set(gaps) == set(ids[:4])
        for cid in ids[:4]:
            c = p.get_comparison(cid)
            assert gaps[cid] == pytest.approx(abs(scores[c.response_a] - scores[c.response_b]))
        set_queue_order(p, "closest")
        q = AnnotationQueue(p, QueueConfig(retest_share=0))
        assert [q.next().id for _ in range(5)] == sorted(ids[:4], key=lambda c: (gaps[c], c)) + [ids[4]]


def build_safety_classifier(tiny_model_dir, out, labels=("violence", "hate", "self_harm")):
    """A safety classifier on the tiny model: a LoRA adapter and a label head, saved as the safety job saves it."""
    from peft import LoraConfig

    hm = HeadedModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    hm.add_adapter("default", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), out_features=len(labels),
                   kind="safety", labels=list(labels))
    with torch.no_grad():
        hm.heads["default"].weight.mul_(torch.tensor([[1.0], [0.5], [2.0]]))  # labels of different confidence
    hm.save_adapter("default", out)
    (out / "config.yaml").write_text("threshold: 0.6\n")
    return out


def test_a_safety_classifier_scores_responses_with_their_largest_label_probability(tiny_model_dir, tmp_path,
                                                                                     project_path):
    from workbench.reward_scores import HARM_KEY, run_scores

    safety = build_safety_classifier(tiny_model_dir, tmp_path / "safety" / "adapter")
    with Project.create(project_path) as p:
        pid, _ = p.add_prompt([{"role": "user", "content": "Tell me something."}])
        rids = [p.add_response(pid, text)[0] for text in ("Sure, here it is.", "No.", "A longer, kinder answer.")]
        rows = [(rid, [{"role": "user", "content": "Tell me something."}], p.get_response(rid).content) for rid in rids]
    run_id, code, events = run_score(project_path, ScoreConfig(safety_model=str(safety), response_ids=rids[:2],
                                                               device="cpu", max_length=MAX_LEN, num_threads=1))
    assert code == 0, [e.data for e in events if e.type.value == "error"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    hm = HeadedModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    hm.load_adapter("safety", safety)
    hm.eval()
    enc = ChatEncoder(tok, MAX_LEN)
    with Project.open(project_path) as p:
        harm = run_scores(p, run_id, HARM_KEY)
        assert set(harm) == set(rids[:2]) and not p.metrics(run_id, SCORE_KEY)  # the third was not asked for
    with torch.no_grad():
        for rid, messages, text in rows[:2]:
            prompt, response, _ = enc.encode_single(messages, text)
            ids = torch.tensor([prompt + response])
            expected = float(torch.sigmoid(hm.score("safety", ids, torch.ones_like(ids))).max())
            assert harm[rid] == pytest.approx(expected, abs=1e-4) and 0.0 < harm[rid] < 1.0


def test_a_reward_model_where_a_safety_classifier_is_asked_for_is_refused(tiny_model_dir, reward_dir, project_path):
    with Project.create(project_path) as p:
        pid, _ = p.add_prompt([{"role": "user", "content": "q"}])
        rid, _ = p.add_response(pid, "a")
    run_id, code, events = run_score(project_path, ScoreConfig(safety_model=str(reward_dir), response_ids=[rid],
                                                               device="cpu"))
    errors = [e.data["message"] for e in events if e.type.value == "error"]
    assert code == 1 and len(errors) == 1 and "not a safety classifier" in errors[0]
