"""Every stage finishes on every family: for tiny Llama, Qwen2, Qwen3, Gemma 2, Gemma 3, Mistral and Phi-3
checkpoints (tests/tiny_models.py), ``workbench train sft|rm|safety|dpo|ppo PROJECT --base DIR --max-steps 1`` and
``workbench generate PROJECT --base DIR`` run to the end through the worker, the run log names the family once and
what the packed layouts honour for it, and every training run records its memory estimate and measured peak. The
score job's batched rewards equal each conversation scored alone, and the Playground's greedy reply is the family
model's own greedy ``generate``.

The command lines are the CLI's own (its parser turns them into the run configs, :class:`JobClient` creates the runs),
and each job runs in the worker's own entry point, in this process: one import of torch for the whole matrix
instead of one per run keeps it under a minute. The last test runs the real command and worker process for Gemma 2."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from engine.jobs.context import JobContext
from engine.jobs.playground import run as run_playground
from engine.worker import run as run_worker
from tests.tiny_models import FAMILIES, build_tiny_causal_lm
from workbench.cli import build_parser
from workbench.cli_train import config_from_args
from workbench.configs import GenerateConfig, ScoreConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import EVENTS_LOG
from workbench.reward_scores import SCORE_KEY, run_scores
from workbench.store import Project

QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?", "What do bees make?",
    "What is two plus two?", "Which planet is called the red planet?", "What is water made of?",
    "How many days are in a week?", "What animal says moo?",
]


def family_project(path: Path) -> Path:
    """Demonstrations, judged pairs, safety flags and prompts: data for every stage."""
    with Project.create(path) as p:
        for i, q in enumerate(QUESTIONS):
            pid, _ = p.add_prompt([{"role": "user", "content": q}], source="test")
            p.add_demonstration(pid, f"A short and correct answer to question {i}.")
            good, _ = p.add_response(pid, f"Answer {i}, explained clearly and calmly in a full sentence.")
            bad, _ = p.add_response(pid, f"I will hurt you, {i}.")
            p.add_comparison(pid, good, bad, verdict="a", strength="clear", left_side="a")
            p.add_flag(pid, "violence", "high", response_id=bad)
            p.add_flag(pid, "violence", None, response_id=good, present=False)
    return path


def _run(project: Path, argv: list[str]) -> tuple[dict, str]:
    """Run one CLI command line's job through the worker; (the run row, the run's log)."""
    cfg = config_from_args(build_parser().parse_args(argv))
    stage = argv[1] if argv[0] == "train" else argv[0]
    run_id, run_dir = JobClient(project).prepare(stage, cfg)
    out = io.StringIO()
    code = run_worker(run_dir, stdout=out, own_process=False)
    with Project.open(project) as p:
        run = p.get_run(run_id)
    log = (run_dir / EVENTS_LOG).read_text(encoding="utf-8")
    assert code == 0 and run["status"] == "done", f"{argv}: {run.get('error')}\n{out.getvalue()[-2000:]}"
    return run, log


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_stage_finishes_on_the_family(tmp_path, arch):
    model = build_tiny_causal_lm(tmp_path / arch, arch=arch)
    project = family_project(tmp_path / "p.wbp")
    common = [str(project), "--base", str(model), "--quiet"]
    outputs = {}
    for stage in ("sft", "rm", "safety", "dpo"):
        run, log = _run(project, ["train", stage, *common, "--max-steps", "1"])
        outputs[stage] = run["output_dir"]
        family_lines = [json.loads(line)["data"]["message"] for line in log.splitlines()
                        if '"model family ' in line]
        assert len(family_lines) == 1, family_lines
        if arch == "gemma2":
            assert "soft-cap 5" in family_lines[0] and "final logit soft-cap 2" in family_lines[0]
        # every run records its memory estimate beside its measured peak
        final = run["final_metrics"]
        assert final["memory/estimate_mb"] > 0 and final["memory/peak_mb"] > 0 and "memory estimate:" in log
    _run(project, ["train", "ppo", *common, "--max-steps", "1", "--reward-model",
                   str(Path(outputs["rm"]) / "adapter")])
    _run(project, ["generate", *common, "--n", "2", "--max-new-tokens", "12"])
    with Project.open(project) as p:
        assert p.responses(source="generate")  # sampled responses stored (duplicates and empty ones are skipped)


@pytest.mark.parametrize("arch", FAMILIES)
def test_score_and_playground_compute_what_the_family_model_computes(tmp_path, arch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.engine.test_score_job import direct_scores

    model = build_tiny_causal_lm(tmp_path / arch, arch=arch)
    project = family_project(tmp_path / "p.wbp")
    rm, _ = _run(project, ["train", "rm", str(project), "--base", str(model), "--quiet", "--max-steps", "1"])
    reward = Path(rm["output_dir"]) / "adapter"
    with Project.open(project) as p:
        rows = [(r.id, p.get_prompt(r.prompt_id).messages, r.content) for r in p.responses()]
    # Batches of 4 conversations of different lengths: padding and the sliding window meet in every batch.
    cfg = ScoreConfig(reward_model=str(reward), response_ids=[r[0] for r in rows], batch_size=4, max_length=96,
                      device="cpu", num_threads=1)
    run_id, run_dir = JobClient(project).prepare("score", cfg)
    assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0
    with Project.open(project) as p:
        scored = run_scores(p, run_id, SCORE_KEY)
    alone = direct_scores(model, reward, rows)
    assert set(scored) == set(alone) == {r[0] for r in rows} and len(rows) >= 2 * len(QUESTIONS)
    for rid, value in alone.items():
        assert scored[rid] == pytest.approx(value, rel=1e-4, abs=1e-4), rid

    messages = [{"role": "user", "content": QUESTIONS[0]}]
    out = io.StringIO()
    ctx = JobContext(stage="playground", run_dir=tmp_path, run_id=None, project_path=None, stdout=out,
                     config=GenerateConfig(base_model=str(model), device="cpu", dtype="float32", quantize="none",
                                           max_new_tokens=12, temperature=0.0))
    ctx.commands.put(("chat", {"id": 1, "messages": messages}))
    ctx.commands.put(("stop", {}))
    try:
        assert run_playground(ctx).status == "done"
    finally:
        ctx.close()
    reply = next(e["data"] for e in map(json.loads, out.getvalue().splitlines()) if e["data"].get("level") == "reply")
    tok = AutoTokenizer.from_pretrained(model)
    own = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    ids = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False,
              return_tensors="pt").input_ids
    with torch.no_grad():
        greedy = own.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                              pad_token_id=tok.pad_token_id)
    assert reply["text"] == tok.decode(greedy[0, ids.shape[1]:], skip_special_tokens=True).strip()
    assert reply["tokens"] == greedy.shape[1] - ids.shape[1]


def test_the_command_line_trains_gemma2_in_a_worker_process(tmp_path):
    """The same through the real command and a worker process, for the family that differs most from Llama."""
    import subprocess
    import sys

    model = build_tiny_causal_lm(tmp_path / "gemma2", arch="gemma2")
    project = family_project(tmp_path / "p.wbp")
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "sft", str(project), "--base", str(model),
                           "--max-steps", "1", "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["metrics"]["train/loss"] > 0
