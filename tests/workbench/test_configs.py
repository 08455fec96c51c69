"""Run configs: defaults with help text, YAML round trips, clear errors for bad files."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.configs import CONFIG_CLASSES, RewardConfig, SftConfig, load_config
from workbench.errors import InputError
from workbench.paths import BUNDLED_MODEL_REF


@pytest.mark.parametrize("cls", list(CONFIG_CLASSES.values()), ids=list(CONFIG_CLASSES))
def test_every_field_has_help_and_round_trips(cls, tmp_path):
    cfg = cls()
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    path = cfg.save(tmp_path / "c.yaml")
    assert cls.load(path) == cfg
    assert cls.from_yaml(cfg.to_yaml(with_help=False)) == cfg


def test_changed_values_round_trip_and_help_lands_as_comments(tmp_path):
    cfg = SftConfig(lr=3e-5, max_steps=7, lora_targets=["q_proj", "v_proj"], snapshot_id=4, adapter_from="/x/y",
                    epochs=2.5, gradient_checkpointing=True)
    text = cfg.to_yaml()
    assert "# Peak learning rate (AdamW)." in text
    back = SftConfig.from_yaml(text)
    assert back == cfg and back.lora_targets == ["q_proj", "v_proj"]


def test_defaults():
    cfg = SftConfig()
    assert cfg.base_model == BUNDLED_MODEL_REF and cfg.keep_checkpoints == 2
    rm = RewardConfig()
    assert rm.margins == {"none": 0.0, "slight": pytest.approx(1 / 3), "clear": pytest.approx(2 / 3), "strong": 1.0}
    assert rm.margins is not RewardConfig().margins  # no shared mutable default


def test_unknown_key_names_the_field_and_suggests(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("lr: 0.001\nbatchsize: 4\n")
    with pytest.raises(InputError) as e:
        SftConfig.load(p)
    assert e.value.field == "batchsize" and "batch_size" in str(e.value) and str(p) in str(e.value)


def test_wrong_type_and_range(tmp_path):
    with pytest.raises(InputError, match="whole number") as e:
        SftConfig.from_yaml("batch_size: four\n", source="c.yaml")
    assert e.value.field == "batch_size"
    with pytest.raises(InputError, match="at least 1"):
        SftConfig.from_yaml("batch_size: 0\n")
    with pytest.raises(InputError, match="one of auto, 4bit, none"):
        SftConfig.from_yaml("quantize: 8bit\n")
    # ints are fine for floats, and whole floats for ints
    assert SftConfig.from_yaml("lr: 1\nbatch_size: 4.0\n").lr == 1.0


def test_broken_yaml_names_the_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("lr: 0.1\nbatch_size: [1,\n")
    with pytest.raises(InputError) as e:
        SftConfig.load(p)
    assert e.value.line is not None and str(p) in str(e.value)


def test_load_config_applies_only_given_overrides(tmp_path):
    p = SftConfig(lr=0.5, batch_size=3).save(tmp_path / "c.yaml")
    cfg = load_config("sft", p, batch_size=None, max_steps=9)
    assert (cfg.lr, cfg.batch_size, cfg.max_steps) == (0.5, 3, 9)
    with pytest.raises(InputError, match="no setting"):
        load_config("generate", None, lora_r=4)
    with pytest.raises(InputError, match="unknown job kind"):
        load_config("nope")
