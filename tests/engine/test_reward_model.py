"""The reward model on a tiny model: heads on named adapters, what training changes, saving and loading."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.losses import bradley_terry_loss, pairwise_accuracy
from engine.reward_model import HEAD_FILE, HeadedModel, last_token_index, packed_scores, pair_rewards, read_head_meta
from engine.rm_data import ChatEncoder, collate_pairs

TOPICS = ["the weather", "a recipe", "my homework", "a good book", "the train times", "a birthday gift",
          "learning French", "fixing a bike", "a job interview", "saving money", "a garden", "a headache"]


def toy_pairs(encoder: ChatEncoder, n: int = 12):
    """Chosen answers are polite and on topic; rejected ones are curt refusals: easy to separate."""
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        out.append(encoder.encode(
            [{"role": "user", "content": f"Can you help me with {topic}?"}],
            f"Of course! Here is some help with {topic}, step by step.",
            "No.",
            margin=1 / 3 if i % 2 else 0.0,
            prompt_id=i,
        ))
    return out


@pytest.fixture(autouse=True)
def one_thread():
    # Two tiny-model threads on a busy 2-core machine spin against each other; one is several times faster.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def lora(r: int = 4) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear")


@pytest.fixture
def tiny(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, tok


def accuracy(hm: HeadedModel, pairs, pad_id: int) -> float:
    with torch.no_grad():
        rc, rr = pair_rewards(hm, "default", collate_pairs(pairs, pad_id, "packed"))
    c, n = pairwise_accuracy(rc, rr)
    return c / n


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_training_changes_every_lora_and_head_weight_not_the_base_and_learns(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    hm = HeadedModel(model)
    hm.add_adapter("default", lora(), seed=0)
    enc = ChatEncoder(tok, 128)
    pairs = toy_pairs(enc)
    # peft starts lora_B at zero; give the first step something to move
    before = {n: p.detach().clone() for n, p in hm.named_parameters()}
    trainable = {n for n, p in hm.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or n.startswith("heads.") for n in trainable)
    assert any(n.startswith("heads.default") for n in trainable)
    acc0 = accuracy(hm, pairs, tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in hm.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for step in range(15):
        batch = collate_pairs(pairs[(step * 4) % 12:(step * 4) % 12 + 4], tok.pad_token_id, "packed")
        rc, rr = pair_rewards(hm, "default", batch)
        loss = bradley_terry_loss(rc, rr, batch.margin, centring_coef=0.01).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = dict(hm.named_parameters())
    unchanged = [n for n in trainable if torch.equal(before[n], after[n].detach())]
    assert not unchanged, f"trainable weights that did not change: {unchanged[:5]}"
    changed_frozen = [n for n in before if n not in trainable and not torch.equal(before[n], after[n].detach())]
    assert not changed_frozen, f"frozen weights that changed: {changed_frozen[:5]}"
    acc1 = accuracy(hm, pairs, tok.pad_token_id)
    assert acc1 == 1.0 and acc1 > acc0 or acc0 == 1.0 and losses[-1] < losses[0]
    assert sum(losses[-3:]) < sum(losses[:3])


def test_packed_and_padded_layouts_agree_in_value_and_gradient(tiny):
    model, tok = tiny
    hm = HeadedModel(model)
    hm.add_adapter("default", lora(), seed=0)
    # give lora_B non-zero values so the adapters take part in the forward pass
    with torch.no_grad():
        for n, p in hm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    enc = ChatEncoder(tok, 128)
    pairs = toy_pairs(enc, 5)
    grads = {}
    for layout in ("padded", "packed"):
        hm.zero_grad()
        rc, rr = pair_rewards(hm, "default", collate_pairs(pairs, tok.pad_token_id, layout))
        (rc - rr).sum().backward()
        grads[layout] = (rc.detach(), rr.detach(), hm.heads["default"].weight.grad.clone(),
                         next(p.grad.clone() for n, p in hm.named_parameters() if "lora_A" in n))
    for a, b in zip(grads["padded"], grads["packed"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_save_and_load_adapter_with_head_under_another_name(tiny, tmp_path, tiny_model_dir):
    model, tok = tiny
    hm = HeadedModel(model)
    hm.add_adapter("reward", lora(), seed=1, kind="reward")
    with torch.no_grad():
        for n, p in hm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    enc = ChatEncoder(tok, 128)
    pairs = toy_pairs(enc, 3)
    seqs = [p.prompt_ids + p.chosen_ids for p in pairs]
    with torch.no_grad():
        want = packed_scores(hm, "reward", seqs)
    out = hm.save_adapter("reward", tmp_path / "rm")
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / HEAD_FILE).is_file()
    assert read_head_meta(out)["kind"] == "reward" and read_head_meta(out)["out_features"] == 1
    # peft alone loads the folder
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out))

    # A fresh base with a policy adapter, and the saved reward adapter added beside it under its own name.
    fresh = HeadedModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    fresh.add_adapter("policy", lora(), head=False, seed=2)
    fresh.load_adapter("reward", out)
    assert sorted(fresh.adapter_names()) == ["policy", "reward"]
    with torch.no_grad():
        got = packed_scores(fresh, "reward", seqs)
    torch.testing.assert_close(got, want)
    # padded scoring (as PPO does on generated rows) gives the same rewards
    rows = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in seqs], batch_first=True, padding_value=0)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.reward("reward", rows, mask), want.squeeze(-1), rtol=1e-4, atol=1e-5)
    # switching to the reward adapter leaves the policy trainable and the loaded reward frozen
    assert all(p.requires_grad for p in fresh.trainable_parameters("policy"))
    assert not any(p.requires_grad for p in fresh.trainable_parameters("reward"))


def test_head_from_another_base_is_refused(tiny, tmp_path):
    model, tok = tiny
    hm = HeadedModel(model)
    hm.add_adapter("default", lora())
    hm.save_adapter("default", tmp_path / "a")
    from safetensors.torch import load_file, save_file

    assert set(load_file(str(tmp_path / "a" / HEAD_FILE))) == {"weight"}  # a reward head has no bias
    save_file({"weight": torch.zeros(1, 7)}, str(tmp_path / "a" / HEAD_FILE))
    with pytest.raises(ValueError, match="hidden size 7"):
        hm.load_head("default", tmp_path / "a")


def test_packed_layout_with_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir):
    from engine.pair_attention import pairs_attention

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    grads = []
    for checkpointing in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        hm = HeadedModel(model)
        hm.add_adapter("default", lora(), seed=0)
        with torch.no_grad():
            for n, p in hm.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.linspace(-0.05, 0.05, p.numel()).view_as(p))
        hm.train()
        pairs = toy_pairs(ChatEncoder(tok, 128), 4)
        # the backward pass recomputes the forward under checkpointing: the pair attention must still be on
        with pairs_attention(hm.transformer()):
            rc, rr = pair_rewards(hm, "default", collate_pairs(pairs, tok.pad_token_id, "packed"))
            (rc - rr).sum().backward()
        grads.append([p.grad.clone() for n, p in sorted(hm.named_parameters()) if "lora_A" in n])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
