"""Checkpoints: what they hold, RNG round trip, keeping the last N plus the best."""

from __future__ import annotations

import random

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from engine import checkpoints as ckpt
from engine.training import DataOrder, warmup_cosine


def _model(tiny):
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))


def test_save_and_load_restore_everything(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    model = _model(tiny_model_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    sched = warmup_cosine(opt, 10, 0.2)
    for _ in range(3):
        model(input_ids=torch.tensor([[1, 5, 9, 12]])).logits.sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    order = DataOrder(7, seed=3)
    order.take(9)
    random.seed(11)
    path = ckpt.save_checkpoint(tmp_path, 3, model=model, optimizer=opt, scheduler=sched,
                                state={"data_order": order.state()})
    expected_random, expected_torch = random.random(), torch.rand(3)
    expected_next = order.take(5)
    saved = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}

    torch.manual_seed(99)
    fresh = _model(tiny_model_dir)
    opt2 = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-2)
    sched2 = warmup_cosine(opt2, 10, 0.2)
    state, extra = ckpt.load_checkpoint(path, model=fresh, optimizer=opt2, scheduler=sched2)
    assert state["step"] == 3 and extra == {}
    for k, v in fresh.state_dict().items():
        if "lora_" in k:
            assert torch.equal(v, saved[k])
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert random.random() == expected_random and torch.equal(torch.rand(3), expected_torch)
    assert DataOrder.from_state(state["data_order"], 7).take(5) == expected_next


def test_prune_keeps_last_n_and_best(tmp_path):
    for step in (10, 20, 30, 40, 50):
        d = ckpt.checkpoint_path(tmp_path, step)
        d.mkdir()
        (d / "state.json").write_text("{}")
    ckpt.mark_best(tmp_path, ckpt.checkpoint_path(tmp_path, 20), 0.5, "eval/loss")
    removed = ckpt.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["step-00000010", "step-00000030"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000020", "step-00000040", "step-00000050"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000050"
    # a half-written checkpoint (no state.json) is never taken for one
    (tmp_path / "step-00000060").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000050"


def test_data_order_is_a_fresh_permutation_each_epoch():
    order = DataOrder(5, seed=1)
    first, second = order.take(5), order.take(5)
    assert sorted(first) == sorted(second) == list(range(5))
    assert first != second
    assert DataOrder(5, seed=1).take(10) == first + second
