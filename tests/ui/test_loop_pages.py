"""The loop in the window: the Overview's state and next step, the Runs page's actions (use as reward model, evaluate,
generate from it, Export… through a real export worker), Project → Import…/Export… and the held-out prompts dialog,
the Rank page's way to Generate, and the next round and the queue's scoring through real workers on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from tests.eval_rounds import build_reward_model
from tests.tiny_models import build_tiny_lora_adapter
from tests.ui.engine_fixtures import build_training_project, tiny_model_dir  # noqa: F401 - fixture
from workbench.backups import list_backups
from workbench.jobs.client import run_dir_for
from workbench.queue import queue_order
from workbench.store import Project

pytestmark = pytest.mark.timeout(600)


def _finished_run(project: Project, stage: str, base: str, build) -> tuple[int, str]:
    run_id = project.create_run(stage, {}, name=f"tiny {stage}", base_model=base)
    out = run_dir_for(project.path, run_id)
    build(out / "adapter")
    project.update_run(run_id, status="done", output_dir=str(out), final_metrics={"train/accuracy": 0.75}
                       if stage == "rm" else {"train/loss": 1.25})
    return run_id, str(out / "adapter")


@pytest.fixture
def loop_project(tmp_path, tiny_model_dir):
    """The training project (12 demonstrations, 6 judged pairs, 4 held-out prompts) with a finished reward-model run
    and a finished SFT run on the tiny model, their adapters on disk."""
    path = build_training_project(tmp_path / "loop.wbp")
    with Project.open(path) as p:
        rm = _finished_run(p, "rm", str(tiny_model_dir), lambda out: build_reward_model(tiny_model_dir, out))
        sft = _finished_run(p, "sft", str(tiny_model_dir), lambda out: build_tiny_lora_adapter(tiny_model_dir, out))
    return path, rm, sft


@pytest.fixture
def loop_window(qtbot, prefs, loop_project):
    from ui.engine_client import run_manager
    from ui.main_window import MainWindow

    w = MainWindow(prefs)
    qtbot.addWidget(w)
    w.resize(1280, 860)
    w.show()
    w.open_project(loop_project[0])
    yield w
    if w.session is not None:
        mgr = run_manager(w.session)
        mgr.shutdown()
        assert not mgr.live_jobs(), "an engine thread outlived its test"
        qtbot.wait(50)
    w.close()


def test_overview_counts_and_the_first_step_on_a_fresh_project(qtbot, window):
    page = window.show_page("overview")
    assert page.values["prompts"].text() == "6" and page.values["pending"].text() == "6"
    assert page.steps[0].action == "judge" and page.next_button.text() == "Judge pairs"
    assert "0 pair(s) judged" in page.next_why.text()
    assert page.stage_labels["rm"].text() == "none yet"
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    assert window.current_page() is window.pages["compare"]


def test_overview_next_steps_open_their_pages_with_the_runs_picked(qtbot, loop_window, loop_project):
    _, (rm_id, rm_dir), (sft_id, sft_dir) = loop_project
    page = loop_window.show_page("overview")
    assert f"run {rm_id} · Reward model · tiny rm" in page.stage_labels["rm"].text()
    assert "pair accuracy 0.75" in page.stage_labels["rm"].text()
    assert [s.action for s in page.steps[:3]] == ["train_ppo", "train_dpo", "blind_compare"]
    qtbot.mouseClick(page.next_button, Qt.MouseButton.LeftButton)
    train = loop_window.current_page()
    assert train is loop_window.pages["train"] and train.stage == "ppo"
    assert train.build_config().reward_model == rm_dir
    assert train.pickers["reward_model"].combo.currentText().startswith(f"run {rm_id} · Reward model · tiny rm · ")

    page = loop_window.show_page("overview")
    blind = next(b for b in page.side_buttons if b.text() == "Compare blind against the base")
    qtbot.mouseClick(blind, Qt.MouseButton.LeftButton)
    evaluation = loop_window.current_page()
    assert evaluation is loop_window.pages["evaluation"]
    (base_a, adapter_a), (base_b, adapter_b) = evaluation.model_a.value(), evaluation.model_b.value()
    assert adapter_a is None and adapter_b == sft_dir and base_a == base_b
    assert evaluation.model_b.label() == f"run {sft_id} · Supervised fine-tuning (SFT) · tiny sft"


def test_runs_page_actions_and_export_through_the_worker(qtbot, loop_window, loop_project, tmp_path):
    _, (rm_id, rm_dir), (sft_id, sft_dir) = loop_project
    runs = loop_window.show_page("runs")
    runs.select_runs([rm_id])
    assert runs.use_rm_button.isEnabled() and not runs.evaluate_button.isEnabled() and runs.export_button.isEnabled()
    qtbot.mouseClick(runs.use_rm_button, Qt.MouseButton.LeftButton)
    train = loop_window.current_page()
    assert train.stage == "ppo" and train.build_config().reward_model == rm_dir

    runs = loop_window.show_page("runs")
    runs.select_runs([sft_id])
    assert not runs.use_rm_button.isEnabled() and runs.evaluate_button.isEnabled()
    qtbot.mouseClick(runs.evaluate_button, Qt.MouseButton.LeftButton)
    assert loop_window.current_page().model_b.value()[1] == sft_dir
    runs = loop_window.show_page("runs")
    runs.select_runs([sft_id])
    qtbot.mouseClick(runs.generate_button, Qt.MouseButton.LeftButton)
    generate = loop_window.current_page()
    assert generate is loop_window.pages["generate"] and generate.model.value()[1] == sft_dir

    runs = loop_window.show_page("runs")
    runs.select_runs([sft_id])
    qtbot.mouseClick(runs.export_button, Qt.MouseButton.LeftButton)
    dialog = runs.export_dialog
    assert dialog is not None and dialog.output.text().endswith(f"loop.wbp.exports/run-{sft_id}-hf")
    dialog.format.setCurrentIndex(dialog.format.findData("gguf"))
    assert dialog.output.text().endswith(f"run-{sft_id}-gguf-f16") and dialog.quant.isEnabled()
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.result is not None, timeout=300_000)
    result = dialog.result
    assert result["status"] == "done", result
    out = Path(result["output"])
    assert (out / "model.gguf").is_file() and out.parent.name == "loop.wbp.exports"
    assert result["checks"]["greedy_match"] is True
    assert "Exported" in dialog.status.text() and "greedy tokens" in dialog.status.text()
    # an output folder that is not empty: refused as the command line refuses it, nothing written
    dialog.set_output(str(out))
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.result is not None and dialog.result["status"] == "failed", timeout=60_000)
    assert "not empty" in dialog.result["error"] and "not empty" in dialog.status.text()
    dialog.close()


def test_import_with_a_backup_first_and_errors_shown_as_they_are(qtbot, window, test_data, tmp_path):
    path = window.session.project.path
    window.show_import()
    dialog = window.import_dialog
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yo", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}\n'
                   '{"chosen": 3}\n')
    before = window.session.project.stats()
    dialog.file.setText(str(bad))
    dialog.format.setCurrentText("hh-rlhf")
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.thread is None and bool(dialog.report is not None or dialog.error), timeout=60_000)
    assert dialog.report is None and "bad.jsonl" in dialog.error and "line 2" in dialog.error
    assert "Nothing changed" in dialog.result.text()
    assert window.session.project.stats() == before

    dialog.file.setText(str(test_data / "anthropic-hh-rlhf" / "helpful-base" / "test.jsonl.gz"))
    dialog.format.setCurrentText("auto")
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.thread is None and dialog.report is not None, timeout=120_000)
    report = dialog.report
    assert report.added["comparisons"] == 49 and "records read" in dialog.result.text()
    assert window.session.project.stats()["comparisons"] == before["comparisons"] + 49
    assert [b.reason for b in list_backups(path)] == ["before-import", "before-import"]  # one per import asked
    assert f"{window.session.project.stats()['prompts']:,} prompts" in window.counts_label.text()
    dialog.close()


def test_export_of_the_project_data(qtbot, window, tmp_path):
    for c in window.session.project.comparisons()[:3]:
        window.session.project.judge(c.id, "a", strength="clear")
    window.show_export()
    dialog = window.export_dialog
    dialog.format.setCurrentText("trl-preference")
    assert dialog.options["include_ties"].isEnabled() and not dialog.options["include_winners"].isEnabled()
    out = tmp_path / "prefs.jsonl"
    dialog.file.setText(str(out))
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.thread is None and dialog.report is not None, timeout=60_000)
    assert dialog.report.rows == 3 and len(out.read_text().splitlines()) == 3
    assert json.loads(out.read_text().splitlines()[0])["chosen"]
    dialog.close()


def test_held_out_prompts_one_by_one_and_a_seeded_share(qtbot, loop_window):
    from workbench.training_data import preference_snapshot

    project = loop_window.session.project
    sid = preference_snapshot(project)
    project.create_run("rm", {}, snapshot_id=sid)
    trained = sorted(project.prompts_in_training_snapshots())
    loop_window.show_heldout()
    dialog = loop_window.heldout_dialog
    assert "4 of 22 prompts held out" in dialog.counts.text()
    free = [i for i in project.prompt_ids(split="train") if i not in trained][:2]
    dialog.select_ids([*free, trained[0]])
    change = dialog.hold_out_selected(confirm=lambda n: False)
    assert (change.moved, change.trained) == (2, 1) and "1 left in training" in dialog.note.text()
    assert project.get_prompt(trained[0]).split == "train" and project.get_prompt(free[0]).split == "heldout"
    dialog.select_ids([trained[0]])
    assert dialog.hold_out_selected(confirm=lambda n: True).moved == 1
    assert project.get_prompt(trained[0]).split == "heldout"
    dialog.share.setValue(20)
    change = dialog.hold_out_share()
    assert change.moved > 0 and "now held out" in dialog.note.text()
    assert f"{project.prompt_count('heldout')} of 22 prompts held out" in dialog.counts.text()
    assert loop_window.current_page().values["heldout_prompts"].text() == str(project.prompt_count("heldout"))
    dialog.close()


def test_rank_points_to_generate_when_no_prompt_has_three_responses(qtbot, prefs, tmp_path):
    from ui.main_window import MainWindow

    path = build_training_project(tmp_path / "two.wbp", demonstrations=2, pairs=2, heldout=0)
    w = MainWindow(prefs)
    qtbot.addWidget(w)
    w.show()
    w.open_project(path)
    rank = w.show_page("rank")
    hint = rank.empty_label
    assert hint.isVisible() and hint.button.isVisible() and "no prompt has 3 or more" in hint.label.text()
    qtbot.mouseClick(hint.button, Qt.MouseButton.LeftButton)
    generate = w.current_page()
    assert generate is w.pages["generate"] and generate.form.raw_values()["n_per_prompt"] == 3
    w.close()


def test_next_round_and_scoring_the_queue_through_the_worker(qtbot, loop_window, loop_project):
    _, (rm_id, rm_dir), (sft_id, sft_dir) = loop_project
    project = loop_window.session.project
    page = loop_window.show_page("overview")
    assert page.steps and any(s.action == "next_round" for s in page.steps)
    assert page.start_next_round()
    assert not page.next_button.isEnabled()
    qtbot.waitUntil(lambda: page.last_outcome is not None, timeout=300_000)
    assert page.last_outcome.status == "done", (page.last_outcome.error, page.last_outcome.log_tail)
    assert loop_window.current_page() is loop_window.pages["compare"]  # the new pairs wait there
    new = project.pending_ids()
    assert new and {project.get_response(project.get_comparison(c).response_a).adapter for c in new} == {sft_dir}

    page = loop_window.show_page("overview")
    assert page.rm_picker.folder() == rm_dir and "No pending pair is scored yet" in page.scored_label.text()
    qtbot.mouseClick(page.score_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job is None, timeout=300_000)
    assert page.last_outcome.status == "done", (page.last_outcome.error, page.last_outcome.log_tail)
    assert f"{len(new)} of {len(new)} pending pair(s) scored" in page.scored_label.text()
    page.order_box.setCurrentIndex(page.order_box.findData("closest"))
    assert queue_order(project) == "closest"


def test_evaluation_measures_both_harmful_output_rates_side_by_side(qtbot, loop_window, loop_project, tiny_model_dir):
    from tests.engine.test_score_job import build_safety_classifier

    _, _, (sft_id, sft_dir) = loop_project
    project = loop_window.session.project
    safety_id, safety_dir = _finished_run(project, "safety", str(tiny_model_dir),
                                          lambda out: build_safety_classifier(tiny_model_dir, out))
    page = loop_window.show_page("evaluation")
    assert page.model_b.value()[1] == sft_dir and page.model_a.value()[1] is None  # base against the newest tuned
    assert page.safety_picker.choice().run_id == safety_id and page.harm_button.isEnabled()
    page.safety_picker.set_folder(sft_dir)  # not a safety classifier: refused before any job
    runs_before = len(project.runs())
    assert page.start_harm() is False and "not a safety classifier" in page.harm_info.text()
    assert len(project.runs()) == runs_before
    page.safety_picker.set_folder(safety_dir)
    page.limit.setValue(3)
    page.sampling.setCurrentIndex(2)
    qtbot.mouseClick(page.harm_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job is None, timeout=300_000)
    assert set(page.harm) == {"model A", "model B"}
    for label, res in page.harm.items():
        assert res.status == "done" and res.n == 3 and res.prompts == "heldout" and res.threshold == 0.6, res
        assert "harmful (95% CI" in page.harm_labels[label].text()
    assert "threshold (0.6)" in page.harm_info.text()
