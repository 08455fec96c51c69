"""``workbench train sft``: progress on stderr, a JSON summary as the last stdout line, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.cli import main
from workbench.store import Project


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny")


def _demos(path, n=6):
    with Project.create(path) as p:
        for i in range(n):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Say the number {i}."}])
            p.add_demonstration(pid, f"The number is {i}.")


def test_train_sft_prints_progress_and_a_json_summary(tiny, project_path):
    _demos(project_path)
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "train", "sft", str(project_path), "--base", str(tiny),
         "--max-steps", "3", "--batch-size", "2", "--lora-r", "4", "--lr", "1e-3", "--max-length", "128"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["run_id"] == 1
    assert summary["tokens_per_s"] > 0 and summary["peak_mem_mb"] > 0
    assert summary["output"].endswith("adapter") and "train/loss" in summary["metrics"]
    assert "3/3" in proc.stderr  # the progress bar reached the end
    with Project.open(project_path) as p:
        run = p.get_run(1)
    assert run["config"]["max_steps"] == 3 and run["config"]["lora_r"] == 4 and run["status"] == "done"


def test_failed_run_exits_non_zero_with_the_reason(tiny, project_path, capsys):
    _demos(project_path, n=1)
    code = main(["train", "sft", str(project_path), "--base", str(tiny), "--max-steps", "2", "--quiet"])
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert code == 1 and summary["status"] == "failed"
    assert "needs at least" in summary["error"] and "needs at least" in out.err


def test_bad_config_file_is_refused_before_any_run(tmp_path, project_path, capsys):
    _demos(project_path)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lr: 0.001\nlearning_rate: 3\n")
    code = main(["train", "sft", str(project_path), "--config", str(cfg)])
    out = capsys.readouterr()
    assert code == 1
    assert "learning_rate" in out.err and str(cfg) in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["status"] == "failed"
    with Project.open(project_path) as p:
        assert p.runs() == []
