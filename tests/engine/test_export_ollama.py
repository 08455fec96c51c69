"""Ollama Modelfiles derived from chat templates: the shipped families against checked-in files, a template with a
default system prompt, and templates no Go template can follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.chat_templates import load_template
from engine.export.ollama import jinja_render, modelfile, turn_format
from engine.model_errors import ModelError

DATA = Path(__file__).resolve().parent.parent / "data" / "modelfiles"
# Each family with its own BOS and end-of-sequence tokens, and whether llama.cpp adds the BOS itself.
FAMILIES = {"chatml": ("<|im_start|>", "<|im_end|>", False), "llama3": ("<|begin_of_text|>", "<|eot_id|>", True),
            "gemma": ("<bos>", "<eos>", True)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_modelfile_of_each_shipped_family_matches_the_checked_in_one(family):
    bos, eos, add_bos = FAMILIES[family]
    text = modelfile("model.gguf", load_template(family).text, bos_token=bos, eos_token=eos, add_bos=add_bos)
    assert text == (DATA / f"{family}.Modelfile").read_text(encoding="utf-8")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_turn_format_rebuilds_the_jinja_rendering(family):
    bos, eos, _ = FAMILIES[family]
    render = jinja_render(load_template(family).text, bos_token=bos, eos_token=eos)
    fmt = turn_format(render)
    talk = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "And then?"},
            {"role": "assistant", "content": "Then this."}, {"role": "user", "content": "Thanks"}]
    for n in range(2, len(talk) + 1, 2):
        assert fmt.render(talk[:n], True) == render(talk[:n], True)


def test_a_default_system_prompt_becomes_the_modelfile_system():
    template = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
                "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
                "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    text = modelfile("model.gguf", template, bos_token=None, eos_token="<|im_end|>", add_bos=False)
    assert 'SYSTEM """You are helpful."""' in text
    assert text.count("You are helpful.") == 1  # not also hard-coded into the TEMPLATE


def test_the_bos_is_kept_in_the_template_when_llama_cpp_does_not_add_it():
    bos, eos, _ = FAMILIES["llama3"]
    text = modelfile("model.gguf", load_template("llama3").text, bos_token=bos, eos_token=eos, add_bos=False)
    assert 'TEMPLATE """{{ "<|begin_of_text|>" }}{{- range .Messages }}' in text


@pytest.mark.parametrize("template", [
    # the answer depends on the content (not a per-turn wrapper)
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}",
    # the last user turn is written differently from the others
    "{% for m in messages %}{% if loop.last %}[LAST] {% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
])
def test_templates_that_do_more_than_wrap_turns_are_refused(template):
    with pytest.raises(ModelError, match="Ollama export"):
        modelfile("model.gguf", template, bos_token=None, eos_token=None, add_bos=False)
