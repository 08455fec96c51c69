"""``workbench eval harm`` and ``workbench eval refusal`` through real workers on the tiny model: the model answers,
the safety classifier (or the refusal matcher) judges, and the last line is the JSON summary with the rate, its
Wilson interval, n and which prompts were used."""

from __future__ import annotations

import json

import pytest

from tests.engine.test_score_job import build_safety_classifier
from workbench.cli import main
from workbench.evaluation import XSTEST_TAG, is_refusal, proportion
from workbench.reward_scores import HARM_KEY, run_scores
from workbench.store import Project

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


def _last_json(capsys) -> tuple[dict, str]:
    out = capsys.readouterr()
    return json.loads(out.out.strip().splitlines()[-1]), out.err


def test_harm_rate_on_a_training_sample_then_on_held_out_prompts(tiny_model_dir, tmp_path, project_path, capsys):
    safety = build_safety_classifier(tiny_model_dir, tmp_path / "safety" / "adapter")
    with Project.create(project_path) as p:
        for i in range(6):
            p.add_prompt([{"role": "user", "content": f"Tell me about topic {i}."}])
    common = ["--base", str(tiny_model_dir), "--safety-model", str(safety), "--limit", "3", "--max-new-tokens", "6",
              "--temperature", "0.9", "--device", "cpu"]
    code = main(["eval", "harm", str(project_path), *common])
    summary, err = _last_json(capsys)
    assert code == 0, err[-2000:]
    assert summary["status"] == "done" and summary["prompts"] == "train-sample" and summary["n"] == 3
    assert summary["threshold"] == 0.6  # the classifier's own threshold (its config.yaml)
    with Project.open(project_path) as p:
        generate_run, score_run = summary["runs"]
        assert p.get_run(generate_run)["stage"] == "generate" and p.get_run(score_run)["stage"] == "score"
        harm = run_scores(p, score_run, HARM_KEY)
    k = sum(v >= 0.6 for v in harm.values())
    assert summary["k"] == k and summary["rate"] == pytest.approx(k / 3)
    assert summary["interval"] == pytest.approx(list(proportion(k, 3)[1:]))
    assert "harmful (95% CI" in err

    with Project.open(project_path) as p:
        p.add_prompt([{"role": "user", "content": "A held-out question."}], split="heldout")
    assert main(["eval", "harm", str(project_path), *common, "--quiet"]) == 0
    summary, _ = _last_json(capsys)
    assert summary["prompts"] == "heldout" and summary["n"] == 1


def test_refusal_rate_on_xstest_safe_prompts(tiny_model_dir, project_path, capsys):
    Project.create(project_path).close()
    code = main(["eval", "refusal", str(project_path), "--base", str(tiny_model_dir), "--limit", "3",
                 "--max-new-tokens", "6", "--temperature", "0.9", "--device", "cpu", "--quiet"])
    summary, err = _last_json(capsys)
    assert code == 0, err[-2000:]
    assert summary["status"] == "done" and summary["prompts"] == "xstest-safe" and summary["n"] == 3
    with Project.open(project_path) as p:
        ids = p.prompt_ids(tag=XSTEST_TAG)[:3]
        answers = [r.content for pid in ids for r in p.responses_for(pid)]
    refusals = sum(is_refusal(a) for a in answers) + (3 - len(answers))  # a prompt left unanswered answered nothing
    assert summary["k"] == refusals and len(summary["interval"]) == 2


def test_harm_without_a_safety_classifier_is_refused(project_path, capsys):
    with Project.create(project_path) as p:
        p.add_prompt([{"role": "user", "content": "q"}])
    assert main(["eval", "harm", str(project_path), "--quiet"]) == 1
    summary, err = _last_json(capsys)
    assert summary["status"] == "failed" and "no finished safety-classifier run" in err
    with Project.open(project_path) as p:
        assert p.runs() == []
