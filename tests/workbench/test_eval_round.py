"""The blind evaluation round as a core pipeline: which models and prompts it takes by default, what it refuses,
cancel from another thread, and ``workbench eval round`` end to end on a tiny model and adapter."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from workbench.errors import WorkbenchError
from workbench.eval_round import (
    ModelAnswers,
    PipelineListener,
    default_models,
    round_prompt_ids,
    run_round,
    start_round,
)
from workbench.evaluation import XSTEST_TAG, ModelRef, get_round, rounds
from workbench.jobs.protocol import progress
from workbench.store import Project


def _finished_run(project: Project, stage: str, base: str, output: str, *, status: str = "done") -> int:
    run_id = project.create_run(stage, {"base_model": base}, name=f"{stage} run", base_model=base)
    project.update_run(run_id, status=status, final_metrics={"output": output})
    return run_id


def test_b_is_the_newest_tuned_run_and_a_its_base(project):
    _finished_run(project, "sft", "base-one", "/runs/1/adapter")
    _finished_run(project, "dpo", "base-two", "/runs/2/adapter")
    _finished_run(project, "rm", "base-three", "/runs/3/adapter")        # a reward model is not a tuned policy
    _finished_run(project, "ppo", "base-four", "/runs/4/adapter", status="failed")
    a, b = default_models(project)
    assert (b.base, b.adapter) == ("base-two", "/runs/2/adapter") and "run 2" in b.name
    assert (a.base, a.adapter) == ("base-two", None)
    # What is given wins; a model given without a base runs on the other's base.
    a, b = default_models(project, adapter_a="/mine")
    assert (a.base, a.adapter) == ("base-two", "/mine") and b.adapter == "/runs/2/adapter"
    a, b = default_models(project, model_b="other", adapter_b="/b")
    assert (a.base, a.adapter, b.base, b.adapter) == ("other", None, "other", "/b")


def test_no_tuned_run_and_the_same_model_twice_are_refused(project):
    with pytest.raises(WorkbenchError, match="no tuned model to compare"):
        default_models(project)
    _finished_run(project, "sft", "base", "/runs/1/adapter")
    with pytest.raises(WorkbenchError, match="model A and model B are the same model"):
        default_models(project, adapter_a="/runs/1/adapter")
    with pytest.raises(WorkbenchError, match="no held-out prompts"):
        start_round(project, ModelRef("base"), ModelRef("base", "/a"), [])
    assert rounds(project) == []


def test_round_prompts_are_held_out_and_leave_xstest_to_the_refusal_check(project):
    train = project.add_prompt([{"role": "user", "content": "train"}])[0]
    held = [project.add_prompt([{"role": "user", "content": f"held {i}"}], split="heldout", tags=["t"] if i else [])[0]
            for i in range(3)]
    xs = project.add_prompt([{"role": "user", "content": "xstest"}], split="heldout", tags=[XSTEST_TAG])[0]
    assert round_prompt_ids(project) == held and train not in held
    assert round_prompt_ids(project, limit=2) == held[:2]
    assert round_prompt_ids(project, tag="t") == held[1:]
    assert round_prompt_ids(project, tag=XSTEST_TAG) == [xs]


class _Record(PipelineListener):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []

    def job_started(self, label, run_id, run_dir) -> None:
        self.started.append(label)

    def job_finished(self, label, outcome) -> None:
        self.finished.append(f"{label}: {outcome.status}")


@pytest.mark.skipif(sys.platform == "win32", reason="a script with a shebang stands in for the worker")
def test_cancel_from_another_thread_stops_the_round_before_model_b(project, project_path, tmp_path):
    for i in range(2):
        project.add_prompt([{"role": "user", "content": f"q{i}"}], split="heldout")
    rnd = start_round(project, ModelRef("base"), ModelRef("base", "/adapter"), round_prompt_ids(project))
    project.close()
    fake = tmp_path / "fake-python"  # stands in for `python -m engine.worker`: one progress line, then nothing
    fake.write_text(f"#!{sys.executable}\nimport time\nprint({progress(1, 2).to_json()!r}, flush=True)\ntime.sleep(60)\n")
    fake.chmod(0o755)
    listener = _Record()
    answers = ModelAnswers(project_path, listener=listener, python=str(fake))
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=run_round(answers, rnd)))
    thread.start()
    deadline = time.monotonic() + 30
    while not listener.started and time.monotonic() < deadline:
        time.sleep(0.05)
    answers.cancel(timeout_s=0.5)  # the stand-in ignores the cancel command: the hard kill follows
    thread.join(30)
    assert not thread.is_alive()
    summary = result["summary"]
    assert summary.status == "cancelled" and summary.pairs == 0 and len(summary.runs) == 1
    assert listener.started == ["model A"] and listener.finished == ["model A: cancelled"]
    with Project.open(project_path) as p:
        assert get_round(p, rnd.id).runs == summary.runs  # the round knows the job it started
        assert p.get_run(summary.runs[0])["status"] == "cancelled"
        assert p.comparisons() == []


@pytest.fixture(scope="module")
def tiny_and_adapter(tmp_path_factory):
    """A tiny model and a LoRA adapter on it whose answers differ from the base's."""
    from tests.tiny_models import build_tiny_causal_lm, build_tiny_lora_adapter

    tiny = build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny")
    return tiny, build_tiny_lora_adapter(tiny, tmp_path_factory.mktemp("adapter") / "adapter")


def test_eval_round_command_queues_blind_pairs_between_base_and_newest_tuned_run(tiny_and_adapter, project_path):
    tiny, adapter = tiny_and_adapter
    with Project.create(project_path) as p:
        p.add_prompt([{"role": "user", "content": "A training prompt."}])
        for q in ("Name a colour.", "Count to three.", "Say hello.", "Name a fruit."):
            p.add_prompt([{"role": "user", "content": q}], split="heldout")
        sft = _finished_run(p, "sft", str(tiny), str(adapter))
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "eval", "round", str(project_path), "--limit", "3",
         "--max-new-tokens", "6", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["round_id"] == 1 and summary["prompts"] == 3
    assert summary["pairs"] + summary["identical"] + summary["missing"] == 3 and summary["pairs"] >= 1
    assert summary["model_a"] == str(tiny) and f"run {sft}" in summary["model_b"]
    assert "model A (run" in proc.stderr and "model B (run" in proc.stderr  # a bar per job
    with Project.open(project_path) as p:
        rnd = get_round(p, 1)
        assert (rnd.model_a.base, rnd.model_a.adapter, rnd.model_b.adapter) == (str(tiny), None, str(adapter))
        assert rnd.runs == summary["runs"] and [p.get_run(r)["status"] for r in rnd.runs] == ["done", "done"]
        pairs = p.comparisons(source=rnd.source)
        assert len(pairs) == summary["pairs"] and all(c.kind == "eval" and c.verdict is None for c in pairs)
        assert {p.get_prompt(c.prompt_id).split for c in pairs} == {"heldout"}
        for c in pairs:  # one answer of each model per pair
            adapters = {p.get_response(c.response_a).adapter, p.get_response(c.response_b).adapter}
            assert adapters == {None, str(adapter)}


def test_eval_round_command_says_why_without_a_tuned_run(project_path, capsys):
    from workbench.cli import main

    with Project.create(project_path) as p:
        p.add_prompt([{"role": "user", "content": "q"}], split="heldout")
    assert main(["eval", "round", str(project_path)]) == 1
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["status"] == "failed" and "no tuned model to compare" in summary["error"]
    assert "no tuned model to compare" in out.err
    with Project.open(project_path) as p:
        assert rounds(p) == [] and p.runs() == []
