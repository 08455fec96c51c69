"""The whole loop in the window, from the demo project, with keys and clicks on the real widgets and no typed path:
the Overview's next step leads through it. Judge 20 pairs on Compare, train a reward model (a few steps), run PPO
with that reward model picked from the list (one step), generate a blind round (the base against the PPO run),
judge its pairs, and read the win rate. Real worker processes on the tiny model (the demo's bundled model would take
too long here); the base model is the one setting chosen on the Train page, as a new user picks a model."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tests.e2e.conftest import TINY_SETTINGS
from workbench.demo import ensure_demo_project
from workbench.evaluation import get_round, round_result, rounds
from workbench.store import Project

pytestmark = pytest.mark.timeout(900)


def _next_step(qtbot, window, expected: str):
    """Open the Overview and press its next-step button, which must be ``expected``; returns the page it opened."""
    overview = window.show_page("overview")
    assert overview.steps[0].action == expected, [(s.action, s.why) for s in overview.steps]
    qtbot.mouseClick(overview.next_button, Qt.MouseButton.LeftButton)
    return window.current_page()


def _train(qtbot, page, **settings):
    page.form.set_values({**TINY_SETTINGS, **settings})
    assert not [p for p in page.check() if p[0] == "error"], page.problems.text()
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.last_outcome is not None and not page.manager.busy, timeout=300_000)
    outcome = page.last_outcome
    assert outcome.status == "done", (outcome.error, outcome.log_tail)
    page.last_outcome = None
    return outcome


def test_judge_train_reward_model_ppo_blind_round_win_rate(qtbot, tmp_path, tiny_model_dir):
    from ui.engine_client import run_manager
    from ui.main_window import MainWindow
    from ui.prefs import Prefs

    prefs = Prefs(tmp_path / "prefs.ini")

    path = ensure_demo_project(tmp_path / "demo.wbp")
    prefs.set("safety/hide_flagged", False)  # the demo's red-team pairs shown as they are
    prefs.set("queue/retest_share", 0.0)
    window = MainWindow(prefs)
    qtbot.addWidget(window)
    window.resize(1280, 860)
    window.show()
    window.open_project(path)
    try:
        # 1. judge 20 pairs
        compare = _next_step(qtbot, window, "judge")
        assert compare is window.pages["compare"]
        for i in range(20):
            assert compare.current is not None
            qtbot.keyClick(compare, "1267"[i % 4])
        with Project.open(path) as p:
            assert p.stats()["judged"] == 20

        # 2. a reward model, a few steps
        train = _next_step(qtbot, window, "train_rm")
        assert train is window.pages["train"] and train.stage == "rm"
        train.set_base_model(str(tiny_model_dir))
        rm = _train(qtbot, train, max_steps=3, max_length=256)

        # 3. PPO with that reward model, picked from the list for us
        train = _next_step(qtbot, window, "train_ppo")
        assert train.stage == "ppo"
        picked = train.pickers["reward_model"].choice()
        assert picked is not None and picked.run_id == rm.run_id and picked.folder == rm.output
        ppo = _train(qtbot, train, max_steps=1, rollout_batch_size=2, max_new_tokens=16, ppo_epochs=2, lr=0.05,
                     max_length=256)
        with Project.open(path) as p:
            run = p.get_run(ppo.run_id)
        assert run["stage"] == "ppo" and run["config"]["reward_model"] == rm.output
        assert run["base_model"] == str(tiny_model_dir)

        # 4. a blind round: the base against the PPO run, as the Overview sets it up
        evaluation = _next_step(qtbot, window, "blind_compare")
        assert evaluation is window.pages["evaluation"]
        assert evaluation.model_a.value() == (str(tiny_model_dir), None)
        assert evaluation.model_b.value() == (str(tiny_model_dir), ppo.output)
        evaluation.limit.setValue(6)
        evaluation.sampling.setCurrentIndex(2)  # quick
        qtbot.mouseClick(evaluation.start_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "queued" in evaluation.progress.text() or "Stopped" in evaluation.progress.text(),
                        timeout=300_000)
        assert "queued" in evaluation.progress.text(), evaluation.progress.text()
        with Project.open(path) as p:
            rnd = rounds(p)[-1]
            pending = round_result(p, rnd).pending
        assert pending >= 1

        # 5. judge the round's pairs, blind: the Overview sends Compare straight to them
        compare = _next_step(qtbot, window, "judge_eval")
        assert compare is window.pages["compare"]
        judged = 0
        while compare.current is not None and compare.current.kind == "eval":
            left = window.session.project.get_response(compare.side_ids["left"])
            qtbot.keyClick(compare, "2" if left.adapter else "6")  # the PPO model's answer is preferred
            judged += 1
        assert judged == pending

        # 6. the win rate, on the Evaluation page and the Overview
        evaluation = window.show_page("evaluation")
        evaluation.round_box.setCurrentIndex(evaluation.round_box.findData(rnd.id))
        assert f"wins <b>100.0%</b>" in evaluation.result.text() and "95% CI" in evaluation.result.text()
        with Project.open(path) as p:
            res = round_result(p, get_round(p, rnd.id))
        assert res.a.losses == judged and res.pending == 0
        overview = window.show_page("overview")
        assert f"round {rnd.id}: " in overview.round_label.text() and "wins 100%" in overview.round_label.text()
        assert overview.steps[0].action == "next_round"
    finally:
        run_manager(window.session).shutdown()
        qtbot.wait(50)
        window.close()
