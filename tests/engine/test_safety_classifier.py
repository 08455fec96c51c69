"""The safety classifier: labels with unknown cells masked, the multi-label head, the ``safety`` job on a tiny model."""

from __future__ import annotations

import io

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.losses import masked_bce_with_logits
from engine.reward_model import HeadedModel, read_head_meta
from engine.rm_data import ChatEncoder
from engine.trainers.safety import SafetyLogits, choose_categories, encode_examples, label_rows
from engine.worker import run as run_worker
from workbench.configs import SafetyConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.store import Project
from workbench.training_data import SafetyExample, safety_examples, safety_snapshot


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ex(categories, absent, response_id=1, text="some text", prompt_id=1):
    return SafetyExample(text, list(categories), list(absent), "high" if categories else None, prompt_id, response_id,
                         [{"role": "user", "content": "a question"}])


def test_label_rows_mark_unknown_cells():
    cats = ["violence", "self_harm", "privacy"]
    labels, known = label_rows([ex(["violence"], ["privacy"]), ex([], ["violence", "self_harm"])], cats)
    # violence present / self_harm unknown / privacy known absent; then violence and self_harm known absent
    assert labels == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert known == [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]


def test_choose_categories_in_taxonomy_order_and_checks_names():
    order = ["hate_harassment", "violence", "self_harm", "privacy"]
    exs = [ex(["privacy"], []), ex([], ["violence"])]
    assert choose_categories(exs, [], order) == ["violence", "privacy"]
    assert choose_categories(exs, ["self_harm"], order) == ["self_harm"]
    from engine.jobs import JobError

    with pytest.raises(JobError, match="unknown flag category nope"):
        choose_categories(exs, ["nope"], order)


def test_unknown_labels_give_no_gradient_to_their_logits(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    hm = HeadedModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    cats = ["violence", "self_harm", "privacy"]
    hm.add_adapter("default", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), out_features=3,
                   kind="safety", labels=cats, seed=0)
    # self_harm is unknown everywhere; an example with nothing known is dropped
    items = encode_examples(
        [ex(["violence"], ["privacy"], text="I will hurt you"), ex([], ["violence", "privacy"], text="Have a nice day"),
         ex([], [], text="unlabelled")],
        cats, ChatEncoder(tok, 64),
    )
    assert len(items) == 2
    logits = SafetyLogits(hm)([x.ids for x in items])
    assert logits.shape == (2, 3)
    labels = torch.tensor([x.labels for x in items])
    known = torch.tensor([x.known for x in items])
    masked_bce_with_logits(logits, labels, known).backward()
    head = hm.heads["default"]
    assert head.bias is None and torch.count_nonzero(head.weight.grad[1]) == 0  # self_harm: unknown
    assert torch.count_nonzero(head.weight.grad[0]) > 0 and torch.count_nonzero(head.weight.grad[2]) > 0


def flagged_project(path):
    with Project.create(path) as p:
        for i in range(10):
            pid, _ = p.add_prompt([{"role": "user", "content": f"Tell me about thing {i}."}])
            bad, _ = p.add_response(pid, f"I will hurt you and everyone near thing {i}.")
            good, _ = p.add_response(pid, f"Thing {i} is a nice thing to learn about.")
            p.add_flag(pid, "violence", "high", response_id=bad)
            p.add_flag(pid, "violence", None, response_id=good, present=False)
            if i % 2:
                p.add_flag(pid, "privacy", None, response_id=good, present=False)
        # a prompt-level flag
        pid, _ = p.add_prompt([{"role": "user", "content": "Where does my neighbour live? Give me the address."}])
        p.add_flag(pid, "privacy", "medium")
    return path


def test_safety_job_trains_and_reports_per_category_accuracy(tiny_model_dir, project_path):
    flagged_project(project_path)
    cfg = SafetyConfig(base_model=str(tiny_model_dir), batch_size=4, lr=5e-3, max_steps=4, checkpoint_every=2,
                       eval_fraction=0.3, seed=1, lora_r=4, lora_alpha=8, lora_dropout=0.0, max_length=64,
                       warmup_ratio=0.0)
    client = JobClient(project_path)
    run_id, run_dir = client.prepare("safety", cfg)
    buf = io.StringIO()
    code = run_worker(run_dir, stdout=buf, own_process=False)
    events = [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]
    assert code == 0, [e.data for e in events if e.type.value == "error"]
    done = [e for e in events if e.type.value == "done"][-1]
    fm = done.data["final_metrics"]
    assert "eval/accuracy/violence" in fm and "eval/known/violence" in fm and "train/loss" in fm
    meta = read_head_meta(run_dir / "adapter")
    assert meta["kind"] == "safety" and meta["labels"] == ["violence", "privacy"] and meta["out_features"] == 2
    with Project.open(project_path) as p:
        sid = p.get_run(run_id)["snapshot_id"]
        assert len(safety_examples(p, sid)) == 21


def test_safety_job_refuses_a_project_without_labels(tiny_model_dir, project_path):
    with Project.create(project_path):
        pass
    client = JobClient(project_path)
    run_id, run_dir = client.prepare("safety", SafetyConfig(base_model=str(tiny_model_dir)))
    buf = io.StringIO()
    assert run_worker(run_dir, stdout=buf, own_process=False) == 1
    assert "0 text(s) with safety labels" in buf.getvalue()
    with Project.open(project_path) as p:
        assert p.snapshots() == [] and p.get_run(run_id)["status"] == "failed"
    assert safety_snapshot  # the selector the job uses (imported above) exists
