"""Chat templates: a base model without one is refused with a message saying how to name one; a named template
trains, reaches generation, and is recorded in the run folder; precedence of the run's choice."""

from __future__ import annotations

import io

import pytest
import yaml

from engine.chat_templates import load_template, recorded_template, run_chat_template
from engine.model_errors import ModelError
from engine.models import load_tokenizer
from engine.worker import run as run_worker
from tests.engine.sft_helpers import add_demonstrations
from tests.tiny_models import TINY_CHAT_TEMPLATE, build_tiny_causal_lm
from workbench.configs import GenerateConfig, SftConfig
from workbench.errors import InputError
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.paths import named_chat_templates
from workbench.store import Project


@pytest.fixture(scope="module")
def no_template_model(tmp_path_factory):
    """A tiny base model whose tokenizer has no chat template."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("bare") / "tiny-bare", chat_template=None)


@pytest.fixture
def demo_project(project_path):
    with Project.create(project_path) as p:
        add_demonstrations(p, 6)
    return project_path


def run_inprocess(project_path, stage: str, cfg):
    run_id, run_dir = JobClient(project_path).prepare(stage, cfg)
    buf = io.StringIO()
    code = run_worker(run_dir, stdout=buf, own_process=False)
    events = [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]
    return run_dir, code, events


def sft(model, **kw) -> SftConfig:
    return SftConfig(base_model=str(model), batch_size=2, max_steps=1, lora_r=2, lora_alpha=4, eval_fraction=0.0,
                     checkpoint_every=0, max_length=128, **kw)


def test_the_shipped_templates_render_their_turn_markers():
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    markers = {"chatml": "<|im_start|>assistant\n", "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
               "gemma": "<start_of_turn>model\n"}
    assert named_chat_templates() == sorted(markers)
    from transformers.utils.chat_template_utils import render_jinja_template

    for name, generation_prompt in markers.items():
        rendered, _ = render_jinja_template([conversation], chat_template=load_template(name).text,
                                            add_generation_prompt=True, bos_token="<s>")
        assert rendered[0].endswith(generation_prompt) and "Be brief." in rendered[0] and "Hi" in rendered[0]


def test_a_model_without_a_template_is_refused_with_how_to_name_one(no_template_model, demo_project):
    with pytest.raises(ModelError) as e:
        load_tokenizer(str(no_template_model))
    assert "has no chat template" in str(e.value) and "chat_template" in str(e.value)
    assert all(name in str(e.value) for name in ("chatml", "llama3", "gemma"))
    # through the worker: the run fails with the same message, naming the setting and the choices
    run_dir, code, events = run_inprocess(demo_project, "sft", sft(no_template_model))
    assert code == 1 and events[-1].type.value == "error"
    message = events[-1].data["message"]
    assert "has no chat template" in message and "--chat-template chatml" in message
    assert not (run_dir / "adapter").exists()


def test_a_named_template_trains_and_is_recorded_in_the_run(no_template_model, demo_project):
    run_dir, code, events = run_inprocess(demo_project, "sft", sft(no_template_model, chat_template="llama3"))
    assert code == 0, events[-1].data
    assert any(e.type.value == "log" and "the named template llama3" in e.data["message"] for e in events)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["chat_template"] == "llama3"
    adapter = run_dir / "adapter"
    assert yaml.safe_load((adapter / "config.yaml").read_text())["chat_template"] == "llama3"
    assert (adapter / "chat_template.jinja").read_text() == load_template("llama3").text
    # the adapter loads with the template it was trained with, though its base has none
    assert load_tokenizer(str(adapter)).chat_template == load_template("llama3").text
    # a generation run continuing from that adapter (adapter_from) picks the recorded template up
    with run_chat_template(GenerateConfig(base_model=str(no_template_model), adapter_from=str(adapter))) as template:
        assert template is not None and str(adapter) in template.source
        assert load_tokenizer(str(no_template_model)).chat_template == load_template("llama3").text


def test_the_run_choice_overrides_only_the_run_base(tiny_model_dir, no_template_model, tmp_path):
    own = load_tokenizer(str(tiny_model_dir)).chat_template
    assert own == TINY_CHAT_TEMPLATE
    jinja = tmp_path / "plain.jinja"
    jinja.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}assistant: {% endif %}")
    with run_chat_template(SftConfig(base_model=str(tiny_model_dir), chat_template=str(jinja))) as template:
        assert template.source == f"the file {jinja}"
        assert load_tokenizer(str(tiny_model_dir)).chat_template == jinja.read_text()
        # another model loaded by the same job (e.g. a reward model on another base) keeps its own rules
        with pytest.raises(ModelError, match="has no chat template"):
            load_tokenizer(str(no_template_model))
    assert load_tokenizer(str(tiny_model_dir)).chat_template == own  # the choice ends with the job
    assert recorded_template(tmp_path) is None


def test_bad_template_settings_are_refused_with_the_field(tmp_path):
    with pytest.raises(InputError) as e:
        SftConfig(chat_template="vicuna").validate()
    assert e.value.field == "chat_template" and "chatml" in str(e.value)
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }\n")
    SftConfig(chat_template=str(broken)).validate()  # the file exists; its Jinja is checked when loaded
    with pytest.raises(ModelError, match=r"line \d+: not valid Jinja"):
        load_template(str(broken))
