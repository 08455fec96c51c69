"""The ``export`` job in-process on runs of tiny Llama and Qwen2 models: every format, its checks, classifiers that
score like their adapter and head, and nothing left behind when a check fails."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from engine.reward_model import HeadedModel
from engine.worker import run as run_worker
from tests.engine.sft_helpers import add_demonstrations
from tests.tiny_models import build_tiny_causal_lm
from workbench.configs import ExportConfig, RewardConfig, SafetyConfig, SftConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.model_export import prepare_export
from workbench.store import Project

TOPICS = ["the weather", "a recipe", "my homework", "a good book", "the train times", "a birthday gift", "a garden",
          "learning French"]


def _add_preferences_and_flags(p: Project) -> None:
    for i, topic in enumerate(TOPICS):
        pid, _ = p.add_prompt([{"role": "user", "content": f"Can you help me with {topic}?"}],
                              split="heldout" if i < 2 else "train")
        good, _ = p.add_response(pid, f"Of course! Here is some help with {topic}, step by step.")
        bad, _ = p.add_response(pid, f"No. I will hurt you if you ask about {topic} again.")
        p.add_comparison(pid, good, bad, verdict="a", strength="clear")
        p.add_flag(pid, "violence", "high", response_id=bad)
        p.add_flag(pid, "violence", None, response_id=good, present=False)
        p.add_flag(pid, "privacy", None, response_id=good, present=False)


def _train(project, stage, cfg):
    run_id, run_dir = JobClient(project).prepare(stage, cfg)
    buf = io.StringIO()
    code = run_worker(run_dir, stdout=buf, own_process=False)
    assert code == 0, buf.getvalue()[-2000:]
    return run_dir / "adapter"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A project with an SFT run on a tiny Llama and on a tiny Qwen2, a reward model and a safety classifier."""
    root = tmp_path_factory.mktemp("export-runs")
    llama = build_tiny_causal_lm(root / "tiny-llama")
    qwen2 = build_tiny_causal_lm(root / "tiny-qwen2", arch="qwen2")
    project = root / "p.wbp"
    with Project.create(project) as p:
        add_demonstrations(p)
        _add_preferences_and_flags(p)
    common = dict(batch_size=4, lr=5e-3, max_steps=3, checkpoint_every=0, eval_fraction=0.0, lora_r=4, lora_alpha=8,
                  max_length=128, warmup_ratio=0.0, seed=3)
    return {
        "root": root, "project": project, "llama": llama, "qwen2": qwen2,
        "sft": _train(project, "sft", SftConfig(base_model=str(llama), **common)),
        "sft_qwen2": _train(project, "sft", SftConfig(base_model=str(qwen2), **common)),
        "rm": _train(project, "rm", RewardConfig(base_model=str(llama), gradient_checkpointing=False, **common)),
        "safety": _train(project, "safety", SafetyConfig(base_model=str(llama), **common)),
    }


def export(**kw) -> tuple[int, list[Event], dict]:
    job_dir, _ = prepare_export(ExportConfig(num_threads=1, **kw))
    buf = io.StringIO()
    try:
        code = run_worker(job_dir, stdout=buf, own_process=False)
    finally:
        shutil.rmtree(job_dir)
    events = [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]
    done = [e for e in events if e.type.value == "done"]
    return code, events, (done[-1].data["summary"] if done else {})


def leftovers(out) -> list[str]:
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.export-")]


def test_sft_adapter_exports_to_every_format_and_checks_itself(runs, tmp_path):
    base_q = load_file(str(runs["llama"] / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    for fmt in ("hf", "gguf", "ollama"):
        out = tmp_path / f"out-{fmt}"
        code, events, summary = export(adapter=str(runs["sft"]), output=str(out), format=fmt)
        assert code == 0, events[-1].data
        checks = summary["checks"]
        assert checks["greedy_match"] and checks["greedy_prompts"] == 8 and checks["greedy_tokens"] > 8
        assert checks["checked_on"] == "8 prompts of the project p.wbp"
        assert summary["kind"] == "causal-lm" and summary["files"] == sorted(p.name for p in out.iterdir())
        assert [e.step for e in events if e.type.value == "progress"] == list(range(1, 8))
        card = (out / "README.md").read_text()
        with Project.open(runs["project"]) as p:
            content_hash = p.snapshots()[0]["content_hash"]
        assert f"content hash `{content_hash}`" in card and "train/loss" in card and str(runs["llama"]) in card
        assert "the template the run trained with" in card
        assert not leftovers(out)
        if fmt == "hf":
            merged_q = load_file(str(out / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
            assert merged_q.dtype == torch.float32 and not torch.equal(merged_q, base_q)  # the adapter is in it
            assert (out / "chat_template.jinja").is_file() and (out / "generation_config.json").is_file()
        else:
            assert checks["tokenizer_match"] and 0 < checks["logit_max_diff_frac"] < 0.01
            assert summary["quant"] == "f16" and (out / "model.gguf").is_file()
            assert (out / "Modelfile").is_file() == (fmt == "ollama")
    modelfile = (tmp_path / "out-ollama" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_qwen2_exports_to_q8_0_gguf_and_hf(runs, tmp_path):
    code, events, summary = export(adapter=str(runs["sft_qwen2"]), output=str(tmp_path / "q8"), format="gguf",
                                   quant="q8_0")
    assert code == 0, events[-1].data
    assert summary["gguf"]["architecture"] == "qwen2" and summary["gguf"]["tokenizer_pre"] == "qwen2"
    assert summary["checks"]["logit_tolerance"] == 0.05 and summary["checks"]["logit_max_diff_frac"] < 0.05
    code, events, summary = export(adapter=str(runs["sft_qwen2"]), output=str(tmp_path / "hf"), format="hf")
    assert code == 0, events[-1].data and summary["checks"]["greedy_match"]


def _reference_scores(base, adapter, conversations, tokenizer):
    """Base + adapter + head scores, computed here the way the reward model and safety jobs read them."""
    from transformers import AutoModelForCausalLM

    hm = HeadedModel(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32))
    hm.load_adapter("default", adapter)
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        return hm.score("default", batch["input_ids"], batch["attention_mask"]), batch


CONVERSATIONS = [
    [{"role": "user", "content": "Can you help me with a recipe?"},
     {"role": "assistant", "content": "Of course! Mix flour, eggs and milk, then fry thin pancakes."}],
    [{"role": "user", "content": "Where is the station?"}, {"role": "assistant", "content": "No."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "I will hurt you."}],
]


def test_reward_model_exports_as_a_sequence_classifier_with_equal_scores(runs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "rm"
    code, events, summary = export(adapter=str(runs["rm"]), output=str(out), format="hf")
    assert code == 0, events[-1].data
    assert summary["kind"] == "reward-model"
    assert summary["checks"]["scored"] == 8 and summary["checks"]["score_max_diff"] < 1e-4
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1
    assert "score_bias" not in summary and not hasattr(model.config, "score_bias")
    tokenizer = AutoTokenizer.from_pretrained(out)
    expected, batch = _reference_scores(runs["llama"], runs["rm"], CONVERSATIONS, tokenizer)
    with torch.no_grad():
        got = model(**batch).logits
    assert got.shape == (3, 1) and torch.allclose(got, expected, atol=1e-4)
    assert float(expected.std()) > 1e-3  # the scores differ between conversations: a real comparison


def test_safety_classifier_exports_as_a_multi_label_classifier_with_equal_scores(runs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "safety"
    code, events, summary = export(adapter=str(runs["safety"]), output=str(out), format="hf")
    assert code == 0, events[-1].data
    assert summary["kind"] == "safety-classifier" and summary["labels"] == ["violence", "privacy"]
    config = json.loads((out / "config.json").read_text())
    assert "score_bias" not in config and "score_bias" not in summary
    assert config["id2label"] == {"0": "violence", "1": "privacy"}
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    expected, batch = _reference_scores(runs["llama"], runs["safety"], CONVERSATIONS, tokenizer)
    with torch.no_grad():
        got = model(**batch).logits
    assert got.shape == (3, 2) and torch.allclose(got, expected, atol=1e-4)
    assert float(expected.std()) > 1e-3


def test_a_head_saved_with_a_bias_keeps_it_beside_the_classifier(runs, tmp_path):
    """A safety classifier whose head was saved with a bias (as earlier versions saved every head): no weight of
    the model can hold it, so it is kept in config.json and the model card, and the logits plus it are the head's."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.reward_model import HEAD_FILE

    adapter = shutil.copytree(runs["safety"], tmp_path / "biased-adapter")
    head = load_file(str(adapter / HEAD_FILE))
    with safe_open(str(adapter / HEAD_FILE), framework="pt") as f:
        meta = f.metadata()
    save_file({**head, "bias": torch.tensor([0.75, -0.5])}, str(adapter / HEAD_FILE), metadata=meta)
    out = tmp_path / "safety"
    code, events, summary = export(adapter=str(adapter), output=str(out), format="hf")
    assert code == 0, events[-1].data
    config = json.loads((out / "config.json").read_text())
    assert config["score_bias"] == summary["score_bias"] == [0.75, -0.5]
    assert "score_bias" in (out / "README.md").read_text()
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    expected, batch = _reference_scores(runs["llama"], adapter, CONVERSATIONS, tokenizer)
    with torch.no_grad():
        got = model(**batch).logits + torch.tensor(model.config.score_bias)
    assert got.shape == (3, 2) and torch.allclose(got, expected, atol=1e-4)


def test_a_failed_check_leaves_nothing_behind(runs, tmp_path):
    out = tmp_path / "strict"
    code, events, _ = export(adapter=str(runs["sft"]), output=str(out), format="gguf", logit_tolerance=1e-9)
    assert code == 1 and events[-1].type.value == "error"
    assert "check failed" in events[-1].data["message"] and "not kept" in events[-1].data["message"]
    assert not out.exists() and not leftovers(out)


def test_a_classifier_is_refused_as_gguf(runs, tmp_path):
    out = tmp_path / "rm.gguf"
    code, events, _ = export(adapter=str(runs["rm"]), output=str(out), format="gguf")
    assert code == 1 and "is a reward model" in events[-1].data["message"]
    assert "--format hf" in events[-1].data["message"] and not out.exists() and not leftovers(out)


def test_an_adapter_outside_any_project_is_checked_on_fixed_prompts(runs, tmp_path):
    loose = shutil.copytree(runs["sft"], tmp_path / "loose-adapter")
    out = tmp_path / "loose-out"
    code, events, summary = export(adapter=str(loose), output=str(out), format="gguf", check_prompts=3)
    assert code == 0, events[-1].data
    assert summary["checks"]["checked_on"] == "3 fixed prompts" and summary["checks"]["greedy_prompts"] == 3
    card = (out / "README.md").read_text()
    assert "content hash `" in card and "- train/loss:" in card  # read from the run's own model card


def test_a_run_trained_on_a_4bit_base_merges_into_the_full_precision_base(runs, tmp_path):
    adapter = _train(runs["project"], "sft", SftConfig(base_model=str(runs["llama"]), quantize="4bit", batch_size=4,
                                                       lr=5e-3, max_steps=2, checkpoint_every=0, eval_fraction=0.0,
                                                       lora_r=4, lora_alpha=8, max_length=128))
    out = tmp_path / "from-4bit"
    code, events, summary = export(adapter=str(adapter), output=str(out), format="hf")
    assert code == 0, events[-1].data
    assert summary["dtype"] == "float32" and summary["checks"]["greedy_match"]
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert "quantize: 4bit" in (out / "README.md").read_text()
