"""What the Train page checks before a run starts, Qt-free: the data counts a new snapshot would hold, the
problems that block a start or want confirming, and the finished runs offered as adapters."""

from __future__ import annotations

from workbench.configs import PpoConfig, RewardConfig, SftConfig
from workbench.store import Project
from workbench.train_checks import data_counts, done_runs, preflight, snapshot_size


def _project(project: Project) -> None:
    for i in range(5):
        pid, _ = project.add_prompt([{"role": "user", "content": f"q{i}"}], split="heldout" if i == 4 else "train")
        a, _ = project.add_response(pid, f"a{i}")
        b, _ = project.add_response(pid, f"b{i}")
        project.add_comparison(pid, a, b, verdict="a" if i % 2 else "tie")
        project.add_demonstration(pid, f"Demo {i}.")
    project.add_flag(1, "violence", "low")


def test_data_counts_take_the_training_split_only(project: Project) -> None:
    _project(project)
    assert data_counts(project) == {"demonstrations": 4, "pairs": 2, "rankings": 0, "safety_labels": 1,
                                    "train_prompts": 4, "heldout_prompts": 1,
                                    # what they are part of, as the status bar and Overview count it
                                    "judged": 5, "all_rankings": 0, "all_demonstrations": 5}


def test_preflight_blocks_too_little_data_a_missing_snapshot_and_ppo_without_reward_model(project: Project) -> None:
    _project(project)
    problems = preflight(project, "rm", RewardConfig(min_examples=3))
    assert [(p.level, p.field) for p in problems] == [("error", "min_examples")]
    assert "2 judged pair(s)" in problems[0].message
    assert [p.level for p in preflight(project, "sft", SftConfig(min_examples=2))] == ["warning"]  # 4 < 4 * 2
    assert preflight(project, "sft", SftConfig(min_examples=1)) == []
    missing = preflight(project, "sft", SftConfig(snapshot_id=99))
    assert [(p.level, p.field) for p in missing] == [("error", "snapshot_id")] and "does not exist" in missing[0].message
    sid = project.create_snapshot("sft", {"demonstration": [1, 2]})
    assert snapshot_size(project, sid) == {"demonstration": 2}
    assert preflight(project, "sft", SftConfig(snapshot_id=sid, min_examples=3))[0].field == "snapshot_id"
    ppo = preflight(project, "ppo", PpoConfig(reward_model=""))
    assert any(p.field == "reward_model" and p.level == "error" for p in ppo)
    bad_base = preflight(project, "sft", SftConfig(base_model="/no/such/model", min_examples=1))
    assert [(p.field, p.level) for p in bad_base] == [("base_model", "error")]


def test_done_runs_offer_finished_outputs(project: Project, tmp_path) -> None:
    done = project.create_run("sft", {})
    project.update_run(done, status="done", final_metrics={"output": "/runs/1/adapter"})
    folder = project.create_run("sft", {})
    (tmp_path / "adapter").mkdir()
    project.update_run(folder, status="done", output_dir=str(tmp_path))
    failed = project.create_run("sft", {})
    project.update_run(failed, status="failed", final_metrics={"output": "/runs/3/adapter"})
    project.create_run("rm", {})
    assert [(r["id"], r["adapter"]) for r in done_runs(project, "sft")] == [
        (done, "/runs/1/adapter"), (folder, str(tmp_path / "adapter"))]
    assert done_runs(project, "rm") == []
