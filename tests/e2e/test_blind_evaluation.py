"""A blind evaluation round end to end on the tiny model: the Evaluation page has the engine generate from two
models (the base and base + adapter) on held-out prompts through the core's round pipeline, the pairs reach the
Compare page blind as evaluation items, the expert judges them with key presses, and the win rate with its interval
appears; the eval items never enter a training snapshot. Also the Playground through a real worker."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from workbench.evaluation import get_round
from workbench.store import Project
from workbench.training_data import preference_snapshot

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model whose answers differ from the base's."""
    from tests.tiny_models import build_tiny_lora_adapter

    return build_tiny_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter")


def test_blind_round_from_generation_to_win_rate(qtbot, session, tiny_model_dir, adapter_dir, training_project_path):
    from ui.pages.evaluation import EvaluationPage
    from ui.pages.compare import ComparePage

    page = EvaluationPage(session)
    qtbot.addWidget(page)
    page.show()
    page.activate()
    page.model_a.set_model(str(tiny_model_dir))
    page.model_b.set_model(str(tiny_model_dir), str(adapter_dir))
    page.sampling.setCurrentIndex(2)  # quick
    assert "4 held-out prompt(s)" in page.prompt_info.text()
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "queued" in page.progress.text() or "Stopped" in page.progress.text(), timeout=600_000)
    assert "queued" in page.progress.text(), page.progress.text()
    rnd = page.round
    with Project.open(training_project_path) as p:
        rows = [(c.kind, c.verdict) for c in p.comparisons(source=rnd.source)]
        generated = [p.get_run(r) for r in get_round(p, rnd.id).runs]
    assert rows and all(k == "eval" and v is None for k, v in rows)
    # The window ran the core's round pipeline: one generate run per model, recorded on the round.
    assert [(r["stage"], r["status"], r["config"]["adapter_from"]) for r in generated] == [
        ("generate", "done", None), ("generate", "done", str(adapter_dir))]
    assert "no judged pairs yet" in page.result.text()

    # The expert judges blind on the Compare page: no model names shown; they prefer model B's answer.
    compare = ComparePage(session)
    qtbot.addWidget(compare)
    compare.show()
    compare.activate()
    compare.queue.config.source = rnd.source
    compare.queue.config.retest_share = 0
    compare.show_next()
    judged = 0
    while compare.current is not None and compare.current.kind == "eval":
        left = session.project.get_response(compare.side_ids["left"])
        assert "adapter" not in compare.item_label.text()
        qtbot.keyClick(compare, "2" if left.adapter else "6")  # B is better, whichever side it is on
        judged += 1
    assert judged == len(rows)

    page.refresh()
    res = page.last_result
    assert res.a.n == judged and res.a.losses == judged and res.pending == 0
    assert "wins <b>100.0%</b>" in page.result.text() and "95% CI" in page.result.text()
    with Project.open(training_project_path) as p:
        sid = preference_snapshot(p)
        eval_ids = {c.id for c in p.comparisons(kind="eval")}
        assert not eval_ids & set(p.snapshot_items(sid, "comparison"))


def test_playground_chats_side_by_side_through_the_worker(qtbot, session, tiny_model_dir, adapter_dir):
    from workbench.configs import CONFIG_CLASSES

    if "playground" not in CONFIG_CLASSES:
        pytest.skip("workbench.configs has no 'playground' config class")
    from ui.pages.playground import PlaygroundPage

    page = PlaygroundPage(session)
    qtbot.addWidget(page)
    page.show()
    page.activate()
    page.model.set_model(str(tiny_model_dir), str(adapter_dir))
    page.max_new.setValue(12)
    page.temperature.setValue(0.0)
    page.load()
    qtbot.waitUntil(lambda: page.ready or page.last_outcome is not None, timeout=300_000)
    assert page.ready, page.last_outcome
    page.input.setPlainText("What is the capital of France?")
    assert page.send()
    qtbot.waitUntil(lambda: len(page.base_pane.history) == 2 and len(page.tuned_pane.history) == 2, timeout=120_000)
    assert page.base_pane.history[1]["content"] != page.tuned_pane.history[1]["content"]
    page.unload()
    qtbot.waitUntil(lambda: page.last_outcome is not None, timeout=60_000)
    assert page.last_outcome.status == "done"
