"""The Train page without a worker: the settings form generated from every config dataclass (help as tooltips),
presets, base-model choices, the checks before a start, and the UI process never importing torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from tests.ui.engine_fixtures import session, training_project_path  # noqa: F401
from workbench.configs import config_class
from workbench.paths import BUNDLED_MODEL_REF


@pytest.fixture
def page(qtbot, session):
    from ui.pages.train import TrainPage

    w = TrainPage(session)
    qtbot.addWidget(w)
    w.resize(1300, 850)
    w.show()
    w.activate()
    return w


@pytest.mark.parametrize("stage", ["sft", "rm", "safety", "ppo", "dpo"])
def test_every_config_field_has_an_editor_with_its_help(page, stage):
    from ui.pages.train import OWN_FIELDS

    page.set_stage(stage)
    cls = config_class(stage)
    for f in dataclasses.fields(cls):
        if f.name in OWN_FIELDS:
            continue
        editor = page.form.editors[f.name]
        assert f.metadata["help"] in editor.toolTip(), f.name
    # The defaults read back unchanged.
    cfg = page.build_config()
    assert isinstance(cfg, cls)
    assert dataclasses.asdict(cfg) == dataclasses.asdict(cls(base_model=BUNDLED_MODEL_REF))


def test_ppo_estimator_and_optional_whitening_have_drop_downs(page):
    from PySide6.QtWidgets import QComboBox

    page.set_stage("ppo")
    form = page.form
    whiten, estimator = form.editors["whiten_advantages"], form.editors["advantage_estimator"]
    assert isinstance(whiten, QComboBox) and isinstance(estimator, QComboBox)
    assert whiten.currentText() == "auto" and form.raw_values()["whiten_advantages"] is None
    assert [estimator.itemText(i) for i in range(estimator.count())] == ["gae", "rloo", "grpo"]
    estimator.setCurrentText("grpo")
    form.editors["samples_per_prompt"].setValue(2)
    assert form.config().advantage_estimator == "grpo"
    estimator.setCurrentText("rloo")
    form.editors["samples_per_prompt"].setValue(4)
    whiten.setCurrentText("no")
    cfg = form.config()
    assert (cfg.advantage_estimator, cfg.samples_per_prompt, cfg.whiten_advantages) == ("rloo", 4, False)
    form.set_value("whiten_advantages", True)
    assert whiten.currentText() == "yes" and form.config().whiten_advantages is True


def test_presets_fill_the_settings(page):
    titles = list(page.presets)
    assert "Quick demo on CPU" in titles and "QLoRA on one GPU" in titles
    page.preset.setCurrentText("Quick demo on CPU")
    cfg = page.build_config()
    assert (cfg.device, cfg.quantize, cfg.max_steps, cfg.lora_r) == ("cpu", "none", 30, 8)
    page.preset.setCurrentText("QLoRA on one GPU")
    cfg = page.build_config()
    assert (cfg.quantize, cfg.dtype, cfg.gradient_checkpointing, cfg.max_steps) == ("4bit", "bfloat16", True, None)
    page.set_stage("dpo")  # the preset applies to the new stage too; its own learning rate stays
    cfg = page.build_config()
    assert cfg.quantize == "4bit" and cfg.lr == config_class("dpo")().lr


def test_a_bad_value_is_named_and_blocks_start(page):
    page.form.editors["lr"].setText("fast")
    problems = page.check()
    assert problems and problems[0][0] == "error" and "lr" in problems[0][1]
    assert not page.start_button.isEnabled()
    assert "border" in page.form.editors["lr"].styleSheet()
    page.form.editors["lr"].setText("1e-5")  # YAML 1.1 reads this as text; the form reads a number
    assert page.check() == []
    assert page.build_config().lr == 1e-5
    assert page.start_button.isEnabled()


def test_too_little_data_blocks_start(page, session):
    page.set_stage("safety")  # no safety labels in the project
    problems = page.check()
    assert any(lvl == "error" and "too little data" in msg for lvl, msg in problems)
    assert not page.start_button.isEnabled()
    assert page.start() is False
    assert session.project.runs() == []


def test_ppo_needs_a_reward_model(page, tmp_path):
    page.set_stage("ppo")
    assert any("reward model" in msg for _, msg in page.check())
    page.set_model_field("reward_model", str(tmp_path / "missing-rm"))
    assert any("does not exist" in msg for _, msg in page.check())


def test_base_model_choices_and_missing_folder(page, tmp_path):
    assert page.build_config().base_model == BUNDLED_MODEL_REF
    page.set_base_model(str(tmp_path))  # a folder without config.json
    assert page.base_kind.currentIndex() == 2
    assert any("not a model" in msg for _, msg in page.check())
    page.set_base_model(str(tmp_path / "x.gguf"))
    assert page.base_kind.currentIndex() == 3
    assert any("does not exist" in msg for _, msg in page.check())
    page.set_base_model("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert page.base_kind.currentIndex() == 1 and page.check() == []


def test_existing_snapshot_can_be_chosen_with_its_size(page, session):
    from workbench.training_data import sft_snapshot

    sid = sft_snapshot(session.project)
    page.refresh_data()
    assert page.snap_old.isEnabled()
    page.snap_old.setChecked(True)
    assert page.snap_box.currentData() == sid and "12 demonstrations" in page.snap_box.currentText()
    assert page.build_config().snapshot_id == sid


def test_counts_show_what_a_new_snapshot_would_hold(page):
    text = page.snap_counts.text()
    assert "12 demonstration(s) for this stage" in text and "4 held out" in text


def test_the_window_side_never_imports_torch_or_the_engine():
    code = ("import sys; import ui.pages.train, ui.pages.runs, ui.charts, ui.engine_client, ui.pages.evaluation, "
            "ui.pages.generate, ui.pages.playground; "
            "bad = [m for m in ('torch', 'transformers', 'peft', 'engine') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_memory_estimate_follows_the_settings(page, tmp_path):
    from tests.tiny_models import build_tiny_causal_lm

    model = build_tiny_causal_lm(tmp_path / "tiny")
    page.set_base_model(str(model))
    page.check()
    first = page.fit.text()
    assert "needs about" in first and "fits" in first and "GB free" in first
    assert "activations:" in page.fit.toolTip() and "runtime:" in page.fit.toolTip()
    page.form.set_value("batch_size", 64)
    page.form.set_value("max_length", 4096)
    page.check()
    assert page.fit.text() != first  # a bigger run, a bigger estimate
    page.set_base_model(str(tmp_path / "not-here-yet.gguf"))
    page.check()
    assert "no estimate" in page.fit.text()


def test_a_run_that_does_not_fit_is_refused_unless_started_anyway(page, tmp_path):
    import json

    big = tmp_path / "big"  # a 70B-sized Llama config: hundreds of GB in float32, more than any test machine has
    big.mkdir()
    (big / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
        "tie_word_embeddings": False}))
    page.set_base_model(str(big))
    refusals = [msg for lvl, msg in page.check() if lvl == "error" and "does NOT fit" in msg]
    assert refusals and "Settings that would fit" in refusals[0]
    assert not page.start_button.isEnabled() and page.force_fit.isVisibleTo(page)
    assert page.start() is False and page.run_id is None
    page.force_fit.setChecked(True)
    assert not [msg for lvl, msg in page.check() if "does NOT fit" in msg]
    page.set_base_model(str(tmp_path / "not-here-yet.gguf"))
    page.check()
    assert not page.force_fit.isVisibleTo(page)


def test_an_architecture_the_trainers_cannot_train_blocks_start(page, tmp_path):
    import json

    neo = tmp_path / "neo"
    neo.mkdir()
    (neo / "config.json").write_text(json.dumps({"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"]}))
    page.set_base_model(str(neo))
    assert any(lvl == "error" and "GPTNeoForCausalLM" in msg for lvl, msg in page.check())
    assert not page.start_button.isEnabled()
