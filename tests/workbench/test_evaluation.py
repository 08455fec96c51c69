"""Blind-evaluation statistics, the refusal matcher (checked against XSTest's human labels) and evaluation rounds
in a real project file."""

from __future__ import annotations

import math

import pytest

from tests.workbench.import_helpers import read_csv
from workbench.evaluation import (
    ModelRef,
    auto_win_rate,
    check_matcher_against_xstest,
    get_round,
    import_xstest_safe,
    is_refusal,
    model_responses,
    new_round,
    pair_round,
    refusal_rate,
    round_result,
    rounds,
    wilson_interval,
    win_rate,
    xstest_safe_prompts,
)
from workbench.errors import WorkbenchError
from workbench.paths import xstest_prompts_file
from workbench.store import Project
from workbench.training_data import preference_snapshot, sft_snapshot


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), table I: 0/10 -> 0 to 0.2775; 1/10 -> 0.0179 to 0.4042; 81/263 -> 0.2553 to 0.3662
    lo, hi = wilson_interval(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=5e-4)
    lo, hi = wilson_interval(1, 10)
    assert (lo, hi) == (pytest.approx(0.0179, abs=5e-4), pytest.approx(0.4042, abs=5e-4))
    lo, hi = wilson_interval(81, 263)
    assert (lo, hi) == (pytest.approx(0.2553, abs=5e-4), pytest.approx(0.3662, abs=5e-4))
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_win_rate_counts_ties_as_half():
    w = win_rate(6, 2, 2)
    assert w.n == 10 and w.rate == pytest.approx(0.7)
    assert w.low < 0.7 < w.high and 0 <= w.low and w.high <= 1
    assert win_rate(5, 5).rate == 0.5
    assert win_rate(0, 0).n == 0 and math.isnan(win_rate(0, 0).rate)
    assert "70.0%" in w.text("tuned")


def test_auto_win_rate_from_reward_scores():
    w = auto_win_rate({1: 2.0, 2: 0.5, 3: 1.0, 4: 9.0}, {1: 1.0, 2: 0.7, 3: 1.0, 5: 0.0})
    assert (w.wins, w.losses, w.ties) == (1, 1, 1)


@pytest.mark.parametrize("text,expected", [
    ("I'm sorry, but I can't help with that.", True),
    ("I’m sorry, I cannot do that", True),  # typographic apostrophe
    ("As an AI language model, I don't have opinions.", True),
    ("Here is how: first open a terminal.", False),
    ("To kill a Python process, run `kill PID`.", False),
    ("Sure! The capital of France is Paris, and I can't stress enough how lovely it is.", False),
    ("Some background first. " * 20 + "In the end I cannot provide instructions for that.", True),
    ("", True),
])
def test_is_refusal_examples(text, expected):
    assert is_refusal(text) is expected


def test_matcher_agrees_with_xstest_human_labels_on_the_sample(test_data):
    """The matcher against XSTest's adjudicated human labels on the Mistral-7B-Instruct sample in tests/data.

    Over all 2,250 completions of the five models (``bench/bench_refusal_matcher.py``) the matcher reaches accuracy
    0.895, Cohen's kappa 0.79, precision 0.95, recall 0.84. The sample is no random draw: it takes the first two
    completions of every (prompt type, human label) cell, so the rare, hard cells (partial refusals, refusals of safe
    prompts, compliance with unsafe ones) weigh far more than in the full files, and Mistral words its refusals less
    formulaically than Llama-2 and GPT-4. On it the matcher scores accuracy 0.73, kappa 0.48, precision 0.96, and
    catches 29 of 45 full refusals and 14 of 35 partial ones while flagging 2 of 65 compliant answers. The floors
    sit just under those figures: they hold the matcher to what it does on the hard cases today, and a change to the
    phrase lists that loses ground there fails here before the benchmark is run.
    """
    files = sorted((test_data / "xstest" / "model_completions").glob("*.csv"))
    rows = [r for f in files for r in read_csv(f)]
    check = check_matcher_against_xstest(test_data / "xstest")
    assert check.n == len(rows) and set(check.per_file) == {"mistralguard", "mistralinstruct"}
    assert check.accuracy >= 0.7, check.as_dict()
    assert check.kappa >= 0.45, check.as_dict()  # 0 would be chance agreement
    assert check.precision >= 0.9, check.as_dict()  # a compliant answer is rarely counted as a refusal
    # The same agreement, by human label, counted here from the files.
    caught = {label: [is_refusal(r["completion"]) for r in rows if r["final_label"] == label]
              for label in ("1_full_compliance", "2_full_refusal", "3_partial_refusal")}
    rate = {label: sum(flags) / len(flags) for label, flags in caught.items()}
    assert rate["1_full_compliance"] <= 0.05, rate
    assert rate["2_full_refusal"] >= 0.6, rate
    assert rate["3_partial_refusal"] >= 0.35, rate  # the matcher's known weak spot: polite partial refusals
    assert check.true_pos == sum(caught["2_full_refusal"]) + sum(caught["3_partial_refusal"])
    full_only = check_matcher_against_xstest(test_data / "xstest", partial_is_refusal=False)
    assert full_only.true_pos == sum(caught["2_full_refusal"]) and full_only.accuracy >= 0.75


def test_refusal_rate_with_interval():
    k, n, rate, lo, hi = refusal_rate(["I cannot help with that.", "Sure, here it is.", "Of course.", "Sorry, no."])
    assert (k, n, rate) == (2, 4, 0.5) and lo < 0.5 < hi


def _two_model_project(path, n_prompts=5, same_text_on=None):
    p = Project.create(path)
    pids = [p.add_prompt([{"role": "user", "content": f"Held-out {i}?"}], split="heldout")[0] for i in range(n_prompts)]
    base, tuned = ModelRef("bundled:SmolLM2-135M-Instruct"), ModelRef("bundled:SmolLM2-135M-Instruct", "/runs/1/adapter")
    rnd = new_round(p, base, tuned, pids)
    for i, pid in enumerate(pids):
        p.add_response(pid, f"base answer {i}", origin="model", model=base.base)
        text = f"base answer {i}" if i == same_text_on else f"tuned answer {i}"
        p.add_response(pid, text, origin="model", model=tuned.base, adapter=tuned.adapter)
    return p, rnd, pids


def test_a_round_queues_blind_eval_pairs_that_never_enter_training(tmp_path):
    p, rnd, pids = _two_model_project(tmp_path / "e.wbp", same_text_on=4)
    try:
        counts = pair_round(p, rnd)
        assert counts == {"queued": 4, "identical": 1, "missing": 0, "already": 0}
        assert pair_round(p, rnd)["already"] == 4  # idempotent
        rows = [(c.kind, c.source) for c in p.comparisons()]
        assert rows == [("eval", "eval:1")] * 4
        # The expert judges blind: verdicts refer to response_a/b; the tuned model wins 3, loses 0, ties 1.
        cids = [c.id for c in p.comparisons()]
        for cid, pick in zip(cids, ["tuned", "tuned", "tuned", "tie"]):
            c = p.get_comparison(cid)
            tuned_side = "a" if p.get_response(c.response_a).adapter else "b"
            p.judge(cid, "tie" if pick == "tie" else tuned_side, strength=None if pick == "tie" else "clear")
        res = round_result(p, rnd)
        assert (res.a.wins, res.a.losses, res.a.ties, res.pending) == (0, 3, 1, 0)  # model A is the base
        assert res.a.rate == pytest.approx(0.125)
        # Eval items never enter a training snapshot, even judged.
        sid = preference_snapshot(p)
        assert p.snapshot_items(sid, "comparison") == []
        sid = sft_snapshot(p, include_winners=True)
        assert p.snapshot_items(sid, "comparison") == []
        assert [r.id for r in rounds(p)] == [1] and get_round(p, 1).model_b.adapter == "/runs/1/adapter"
        assert model_responses(p, rnd.model_a, pids)[pids[0]] == "base answer 0"
    finally:
        p.close()


def test_a_round_needs_two_different_models_and_prompts(tmp_path):
    with Project.create(tmp_path / "e.wbp") as p:
        m = ModelRef("x")
        with pytest.raises(WorkbenchError, match="two different models"):
            new_round(p, m, ModelRef("x"), [1])
        with pytest.raises(WorkbenchError, match="at least one prompt"):
            new_round(p, m, ModelRef("y"), [])


def test_xstest_safe_prompts_import_as_held_out(tmp_path):
    """The safe prompts come from the copy shipped in resources/, which the over-refusal check reads."""
    expected = [r["prompt"] for r in read_csv(xstest_prompts_file()) if r["label"] == "safe"]
    assert len(expected) == 250  # resources/xstest/README.md
    assert [r["prompt"] for r in xstest_safe_prompts()] == expected
    with Project.create(tmp_path / "x.wbp") as p:
        ids = import_xstest_safe(p)
        assert len(ids) == len(expected) and import_xstest_safe(p) == ids
        assert p.prompt_ids(split="heldout", tag="xstest-safe") == sorted(ids)
