"""The Evaluation page's automatic win rate through a real worker: a round with some blind verdicts, the project's
finished reward-model run picked from the list, "Score with reward model", and model B's win rate by reward shown
beside the expert's, for the same pair of models, with the reward model named. A folder that is not a reward model
is refused before any run is made."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from tests.eval_rounds import add_round, build_reward_model
from tests.ui.engine_fixtures import session, tiny_model_dir, training_project_path  # noqa: F401
from workbench.evaluation import get_round, round_result
from workbench.reward_scores import auto_round_result

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def rm_run(session, tiny_model_dir):
    """A finished reward-model run of the project, its adapter + head where an ``rm`` run writes them."""
    from workbench.jobs import run_dir_for

    p = session.project
    run_id = p.create_run("rm", {}, name="tiny rm", base_model=str(tiny_model_dir))
    out = run_dir_for(p.path, run_id)
    build_reward_model(tiny_model_dir, out / "adapter")
    p.update_run(run_id, status="done", output_dir=str(out))
    return run_id, str(out / "adapter")


def test_a_round_scored_by_a_reward_model_shows_both_win_rates(qtbot, session, tiny_model_dir, rm_run):
    from ui.pages.evaluation import EvaluationPage

    rnd = add_round(session.project, str(tiny_model_dir), judge=2)
    run_id, folder = rm_run
    page = EvaluationPage(session)
    qtbot.addWidget(page)
    page.show()
    page.activate()
    # the newest finished reward-model run is offered and chosen; the round is not scored by it yet
    assert page.rm_picker.combo.currentText().startswith(f"run {run_id} · Reward model · tiny rm · ")
    assert page.reward_model_folder() == folder
    assert page.round_box.currentData() == rnd.id
    assert "not scored by" in page.auto_label.text() and f"run {run_id} · Reward model · tiny rm" in page.auto_label.text()
    assert "2 wins, 0 losses" in page.result.text()  # the expert's two verdicts, for B

    qtbot.mouseClick(page.score_button, Qt.MouseButton.LeftButton)
    assert not page.score_button.isEnabled()
    qtbot.waitUntil(lambda: page.last_outcome is not None, timeout=300_000)
    assert page.last_outcome.status == "done", (page.last_outcome.error, page.last_outcome.log_tail)

    text = page.auto_label.text()
    res = auto_round_result(session.project, get_round(session.project, rnd.id), folder)
    assert res.scored == 6 and res.unscored == 0 and page.last_auto == res
    b_wins = res.win.losses  # model A's losses are model B's wins
    summary = page.last_outcome.summary
    assert (summary["wins"], summary["losses"], summary["ties"]) == (res.win.wins, res.win.losses, res.win.ties)
    assert f"by the reward of <b>run {run_id} · Reward model · tiny rm</b>" in text
    assert f"<b>tuned</b> wins <b>{1 - res.win.rate:.1%}</b> (95% CI" in text and "against <b>parent</b>" in text
    assert f"{b_wins} wins, {res.win.wins} losses" in text and "of 6 scored pairs" in text
    assert f"of {res.judged} judged pair(s)" in text and res.judged == 2
    # the expert's win rate is still there, beside it, for the same round
    human = round_result(session.project, get_round(session.project, rnd.id))
    assert human.a.n == 2 and "wins <b>100.0%</b>" in page.result.text()
    assert page.score_button.isEnabled()

    # a folder that is not a reward model: a clear message, and no run is created
    runs_before = len(session.project.runs())
    page.set_reward_model(str(tiny_model_dir))
    assert "not a reward model" in page.auto_label.text()
    assert page.start_scoring() is False
    assert "not a reward model" in page.auto_label.text() and len(session.project.runs()) == runs_before
    # back to the run: the stored scores show again without running anything
    page.set_reward_model(folder)
    assert page.last_auto == res
