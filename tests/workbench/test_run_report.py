"""How runs are described: durations, headline metrics, config differences, short model names."""

from __future__ import annotations

import math

from workbench.run_report import config_diff, fmt_duration, metrics_summary, run_duration, short_model


def test_durations() -> None:
    assert [fmt_duration(s) for s in (0, 59.4, 60, 187, 3600, 7500)] == ["0s", "59s", "1m00s", "3m07s", "1h00m", "2h05m"]
    assert fmt_duration(None) == fmt_duration(math.nan) == fmt_duration(-1) == "–"
    run = {"status": "done", "started_at": "2026-01-01T10:00:00.000+00:00", "finished_at": "2026-01-01T10:02:30.000+00:00"}
    assert run_duration(run) == 150.0
    assert run_duration({**run, "finished_at": None}) is None
    assert run_duration({**run, "finished_at": None, "status": "running"}) > 150
    assert run_duration({"status": "pending", "started_at": None}) is None


def test_metrics_summary_puts_the_headline_first() -> None:
    final = {"z/other": 1, "train/loss": 0.41234, "eval/loss": 0.5, "a/first": "x"}
    assert metrics_summary(final, limit=3) == "eval/loss 0.5 · train/loss 0.4123 · a/first x"
    assert metrics_summary(None) == "" and metrics_summary({}) == ""


def test_config_diff_and_short_models(tmp_path) -> None:
    assert config_diff({"lr": 1e-4, "lora_r": 8, "seed": 1}, {"lr": 2e-4, "lora_r": 8, "beta": 0.1}) == [
        ("beta", None, 0.1), ("lr", 1e-4, 2e-4), ("seed", 1, None)]
    assert short_model("bundled:SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert short_model(str(tmp_path)) == tmp_path.name
    assert short_model("org/hub-model") == "org/hub-model" and short_model(None) == ""
