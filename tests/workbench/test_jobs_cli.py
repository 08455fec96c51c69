"""``workbench train|generate``: progress on stderr, a JSON summary as the last stdout line, exit codes; the flags
of each command landing in its config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.cli import build_parser, main
from workbench.cli_train import config_from_args
from workbench.configs import DpoConfig, GenerateConfig, PpoConfig
from workbench.errors import InputError
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


def _config_of(argv: list[str]):
    return config_from_args(build_parser().parse_args(argv))


def test_ppo_flags_land_in_the_config(tmp_path):
    cfg = _config_of(["train", "ppo", "p.rlhf", "--reward-model", "/runs/2/adapter", "--safety-model",
                      "/runs/3/adapter", "--safety-weight", "0.3", "--max-steps", "5"])
    assert isinstance(cfg, PpoConfig)
    assert (cfg.reward_model, cfg.safety_model, cfg.safety_weight, cfg.max_steps) == (
        "/runs/2/adapter", "/runs/3/adapter", 0.3, 5)
    # Flags override a config file; flags left out leave its values alone.
    path = PpoConfig(reward_model="/from/file", safety_weight=2.0, kl_coef=0.2).save(tmp_path / "ppo.yaml")
    cfg = _config_of(["train", "ppo", "p.rlhf", "--config", str(path), "--safety-weight", "0.5"])
    assert (cfg.reward_model, cfg.safety_weight, cfg.kl_coef) == ("/from/file", 0.5, 0.2)
    # The PPO flags belong to ppo only.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "sft", "p.rlhf", "--reward-model", "x"])
    cfg = _config_of(["train", "ppo", "p.rlhf", "--advantage", "rloo", "--samples-per-prompt", "4"])
    assert (cfg.advantage_estimator, cfg.samples_per_prompt) == ("rloo", 4)
    with pytest.raises(InputError, match="samples_per_prompt of at least 2"):
        _config_of(["train", "ppo", "p.rlhf", "--advantage", "rloo"])
    cfg = _config_of(["train", "ppo", "p.rlhf", "--advantage", "grpo", "--samples-per-prompt", "2"])
    assert (cfg.advantage_estimator, cfg.samples_per_prompt) == ("grpo", 2)
    with pytest.raises(InputError, match="grpo compares responses"):
        _config_of(["train", "ppo", "p.rlhf", "--advantage", "grpo"])


def test_dpo_flags_land_in_the_config(capsys):
    cfg = _config_of(["train", "dpo", "p.rlhf", "--beta", "0.3", "--loss-type", "ipo"])
    assert isinstance(cfg, DpoConfig) and (cfg.beta, cfg.loss_type) == (0.3, "ipo")
    assert _config_of(["train", "dpo", "p.rlhf"]).loss_type == "sigmoid"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "dpo", "p.rlhf", "--loss-type", "kto"])
    assert "invalid choice: 'kto'" in capsys.readouterr().err
    with pytest.raises(InputError, match="at least 0"):
        _config_of(["train", "dpo", "p.rlhf", "--beta", "-1"])


def test_generate_flags_land_in_the_config():
    cfg = _config_of(["generate", "p.rlhf", "--base", "/m", "--adapter", "/a", "--n", "3", "--tag", "greet",
                      "--split", "heldout", "--prompts", "4", "5", "--top-k", "0", "--temperature", "0.5"])
    assert isinstance(cfg, GenerateConfig)
    assert (cfg.base_model, cfg.adapter_from, cfg.n_per_prompt, cfg.tag, cfg.split, cfg.prompt_ids, cfg.top_k,
            cfg.temperature) == ("/m", "/a", 3, "greet", "heldout", [4, 5], 0, 0.5)


def test_generate_prints_a_json_summary_of_what_it_added(tiny, project_path):
    with Project.create(project_path) as p:
        for i in range(3):
            p.add_prompt([{"role": "user", "content": f"Tell me about the number {i}."}], tags=["numbers"])
        p.add_prompt([{"role": "user", "content": "Something else entirely."}])
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "generate", str(project_path), "--base", str(tiny), "--tag",
         "numbers", "--n", "2", "--max-new-tokens", "6", "--temperature", "1.0", "--top-p", "1.0", "--seed", "5"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["run_id"] == 1 and summary["prompts"] == 3
    assert summary["tokens_per_s"] > 0 and summary["responses"] >= 3
    with Project.open(project_path) as p:
        stats = p.stats()
        models = {r.model for r in p.responses()}
        assert p.get_run(1)["status"] == "done"
    assert stats["responses"] == summary["responses"] and stats["pending"] == summary["comparisons"]
    assert models == {str(tiny)}
