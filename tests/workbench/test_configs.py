"""Run configs: defaults with help text, YAML round trips, clear errors for bad files."""

from __future__ import annotations

import dataclasses

import pytest

from workbench.configs import CONFIG_CLASSES, DpoConfig, GenerateConfig, PpoConfig, RewardConfig, SftConfig, load_config
from workbench.errors import InputError
from workbench.paths import BUNDLED_MODEL_REF
from workbench.taxonomy import DEFAULT_STRENGTH_MARGIN


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


def test_ppo_config_carries_every_setting_the_ppo_job_reads(tmp_path):
    # Non-default values written to a YAML file reach the config the PPO job reads.
    changed = dict(reward_base="/models/other-base", safety_model="/runs/3/adapter", safety_weight=0.25,
                   reference_adapter="/runs/1/adapter", value_from_reward=True, normalize_reward=False,
                   reward_clip=2.5, missing_eos_penalty=0.5, whiten_advantages=False, kl_horizon=500, critic_warmup_steps=3,
                   value_lr=1e-3, samples_per_prompt=4, advantage_estimator="rloo", min_kl_coef=0.02,
                   top_k=7, sample_every=0, samples_per_store=2, max_prompt_tokens=64)
    path = PpoConfig(**changed).save(tmp_path / "ppo.yaml")
    loaded = dataclasses.asdict(load_config("ppo", path))
    assert {k: loaded[k] for k in changed} == {**changed, "kl_horizon": 500.0}
    assert isinstance(loaded["kl_horizon"], float)
    with pytest.raises(InputError, match="at least 0") as e:
        PpoConfig.from_yaml("safety_weight: -1\n")
    assert e.value.field == "safety_weight"


def test_dpo_margins_default_to_the_taxonomy_table_and_loss_type_is_checked():
    cfg = DpoConfig()
    assert cfg.margins == {("none" if k is None else k): v for k, v in DEFAULT_STRENGTH_MARGIN.items()}
    assert cfg.margins is not DpoConfig().margins
    back = DpoConfig.from_yaml("margins:\n  slight: 0.1\n  strong: 2\nloss_type: ipo\n")
    assert back.margins == {"slight": 0.1, "strong": 2.0} and back.loss_type == "ipo"
    assert DpoConfig.from_yaml(back.to_yaml()) == back
    with pytest.raises(InputError, match="unknown strength 'strnog'") as e:
        DpoConfig.from_yaml("margins:\n  strnog: 1.0\n", source="dpo.yaml")
    assert e.value.field == "margins" and "dpo.yaml" in str(e.value)
    with pytest.raises(InputError, match="one of sigmoid, ipo, hinge") as e:
        DpoConfig.from_yaml("loss_type: kto\n")
    assert e.value.field == "loss_type"


def test_generate_config_split_is_checked():
    assert GenerateConfig.from_yaml("tag: greet\nsplit: heldout\n").split == "heldout"
    with pytest.raises(InputError, match="one of train, heldout") as e:
        GenerateConfig.from_yaml("split: test\n")
    assert e.value.field == "split"
