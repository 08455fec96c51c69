"""The ``dpo`` job on a tiny model: it learns a toy preference (held-out implicit-reward accuracy), its reference is
the starting adapter (or the bare base) without a second model copy, exact resume, each loss type, bad input."""

from __future__ import annotations

import io
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from engine.trainers.dpo import preference_loss
from engine.training import GroupedOrder
from engine.worker import run as run_worker
from workbench.configs import DpoConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event
from workbench.store import Project


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def add_toy_preferences(p: Project, n: int = 24) -> None:
    """Questions whose chosen answer states a sum and whose rejected answer is always the same refusal."""
    for i in range(n):
        a, b = i % 7 + 1, i // 7 + 2
        pid, _ = p.add_prompt([{"role": "user", "content": f"What is {a} plus {b}?"}], source="toy")
        good, _ = p.add_response(pid, f"{a} plus {b} is {a + b}.")
        bad, _ = p.add_response(pid, "No idea, sorry.")
        if i % 2:
            p.add_comparison(pid, good, bad, verdict="a", strength="clear")
        else:
            p.add_comparison(pid, bad, good, verdict="b", strength="slight")


@pytest.fixture
def toy_project(project_path):
    with Project.create(project_path) as p:
        add_toy_preferences(p)
    return project_path


def events_of(buf: io.StringIO) -> list[Event]:
    return [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]


def run_inprocess(project_path, cfg: DpoConfig, *, resume_run: int | None = None, stdout=None):
    client = JobClient(project_path)
    if resume_run is None:
        run_id, run_dir = client.prepare("dpo", cfg)
    else:
        run_id, run_dir = resume_run, client.attach(resume_run).run_dir
    buf = stdout or io.StringIO()
    code = run_worker(run_dir, resume=resume_run is not None, stdout=buf, own_process=False)
    return run_id, run_dir, code, events_of(buf)


def cfg_for(tiny, **kw) -> DpoConfig:
    base = dict(base_model=str(tiny), batch_size=4, lr=5e-3, max_steps=12, checkpoint_every=0, eval_fraction=0.25,
                warmup_ratio=0.0, seed=5, lora_r=4, lora_alpha=8, lora_dropout=0.0, beta=0.1, max_length=64)
    base.update(kw)
    return DpoConfig(**base)


def test_dpo_learns_a_toy_preference_on_held_out_prompts(tiny_model_dir, toy_project):
    cfg = cfg_for(tiny_model_dir)
    run_id, run_dir, code, events = run_inprocess(toy_project, cfg)
    assert code == 0, events[-1]
    with Project.open(toy_project) as p:
        run = p.get_run(run_id)
        assert run["status"] == "done"
        first = {k: v for s, k, v in p.metrics(run_id) if s == 1}
        final = run["final_metrics"]
    # step 1 is computed before any update: policy = reference, so every implicit reward is exactly 0
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0 and first["rewards/accuracy"] == 0.0
    assert final["eval/accuracy"] > 0.6 and final["eval/margin"] > 0
    assert final["rewards/chosen"] > final["rewards/rejected"]
    for key in ("train/loss", "rewards/margin", "train/tokens_per_s", "eval/loss", "eval/chosen", "eval/rejected"):
        assert key in final
    out = run_dir / "adapter"
    assert load_file(out / "adapter_model.safetensors")
    assert DpoConfig.load(out / "config.yaml") == cfg
    assert "DPO" in (out / "README.md").read_text()
    # the reference pass (train, eval and held-out pairs) says how far it got before the first step
    passes = [e.data["message"] for e in events if e.type.value == "log" and "reference pass" in e.data.get("message", "")]
    assert passes and passes[-1].startswith("reference pass: 24 of 24 pairs scored"), passes


def test_reference_is_the_starting_adapter_and_neither_it_nor_the_base_changes(tiny_model_dir, toy_project, tmp_path):
    """Start from an adapter that changes the model: the reference is that adapter (rewards 0 at step 1), and after
    training the reference adapter file and the base weights are bit-identical to before."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    start = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    start_dir = tmp_path / "start-adapter"
    start.save_pretrained(start_dir)
    before = load_file(start_dir / "adapter_model.safetensors")
    base_files = {f.name: f.read_bytes() for f in tiny_model_dir.glob("*.safetensors")}

    cfg = cfg_for(tiny_model_dir, adapter_from=str(start_dir), max_steps=3, eval_fraction=0.0)
    run_id, run_dir, code, events = run_inprocess(toy_project, cfg)
    assert code == 0, events[-1]
    with Project.open(toy_project) as p:
        first = {k: v for s, k, v in p.metrics(run_id) if s == 1}
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    after = load_file(start_dir / "adapter_model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert {f.name: f.read_bytes() for f in tiny_model_dir.glob("*.safetensors")} == base_files
    trained = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert any(not torch.equal(trained[k], before[k]) for k in before)


class CancelAtStep(io.StringIO):
    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def write(self, s: str) -> int:
        n = super().write(s)
        ev = Event.from_json(s)
        if ev.type.value == "progress" and ev.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
        return n


class CancelOnStart(io.StringIO):
    def write(self, s: str) -> int:
        n = super().write(s)
        ev = Event.from_json(s)
        if ev.type.value == "status" and ev.data.get("state") == "running":
            os.kill(os.getpid(), signal.SIGTERM)
        return n


def test_cancel_during_the_reference_pass_stops_before_any_step(tiny_model_dir, toy_project):
    run_id, _, code, events = run_inprocess(toy_project, cfg_for(tiny_model_dir), stdout=CancelOnStart())
    assert code == 0 and events[-1].data["state"] == "cancelled"
    assert not [e for e in events if e.type.value == "progress"]
    assert any("cancelled during the reference pass" in e.data.get("message", "") for e in events if e.type.value == "log")
    with Project.open(toy_project) as p:
        assert p.get_run(run_id)["status"] == "cancelled"
        assert not p.metrics(run_id)


def test_dpo_resume_continues_exactly(tiny_model_dir, toy_project):
    cfg = cfg_for(tiny_model_dir, max_steps=6, batch_size=2, grad_accum=2, eval_fraction=0.0, lora_dropout=0.1)
    full_id, _, code, _ = run_inprocess(toy_project, cfg)
    assert code == 0
    with Project.open(toy_project) as p:
        cfg = cfg.replace(snapshot_id=p.get_run(full_id)["snapshot_id"])
    part_id, _, code, events = run_inprocess(toy_project, cfg, stdout=CancelAtStep(3))
    assert code == 0 and events[-1].data["state"] == "cancelled"
    _, _, code, events = run_inprocess(toy_project, cfg, resume_run=part_id)
    assert code == 0 and events[-1].type.value == "done"
    with Project.open(toy_project) as p:
        full = [v for _, _, v in p.metrics(full_id, "train/loss")]
        resumed = [v for _, _, v in p.metrics(part_id, "train/loss")]
    assert len(full) == 6 and resumed == full


@pytest.mark.parametrize("loss_type", ["ipo", "hinge"])
def test_other_losses_train(tiny_model_dir, toy_project, loss_type):
    cfg = cfg_for(tiny_model_dir, loss_type=loss_type, max_steps=4, eval_fraction=0.0)
    run_id, _, code, events = run_inprocess(toy_project, cfg)
    assert code == 0, events[-1]
    with Project.open(toy_project) as p:
        losses = [v for _, _, v in p.metrics(run_id, "train/loss")]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_preference_losses_worked_example():
    pc, pr = torch.tensor([-4.0]), torch.tensor([-6.0])
    rc, rr = torch.tensor([-5.0]), torch.tensor([-5.0])
    n = torch.tensor([2.0])
    # h = (−4 − −5) − (−6 − −5) = 2
    sig = preference_loss(pc, pr, rc, rr, n, n, beta=0.5, loss_type="sigmoid", margin=None, label_smoothing=0.0)
    assert torch.allclose(sig.losses, -torch.nn.functional.logsigmoid(torch.tensor([1.0])))
    hinge = preference_loss(pc, pr, rc, rr, n, n, beta=0.25, loss_type="hinge", margin=None, label_smoothing=0.0)
    assert torch.allclose(hinge.losses, torch.tensor([0.5]))  # relu(1 − 0.25·2)
    ipo = preference_loss(pc, pr, rc, rr, n, n, beta=0.5, loss_type="ipo", margin=None, label_smoothing=0.0)
    assert torch.allclose(ipo.losses, torch.tensor([0.0]))  # per-token h = 1 = 1/(2β)
    assert torch.allclose(ipo.chosen_rewards, torch.tensor([0.5])) and torch.allclose(ipo.rejected_rewards, torch.tensor([-0.5]))


def test_grouped_order_is_resumable():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    a = GroupedOrder(lengths, 2, seed=1)
    seq = a.take(20)
    b = GroupedOrder(lengths, 2, seed=1)
    b.take(9)
    c = GroupedOrder(lengths, 2, seed=1, consumed=9)
    assert c.take(11) == seq[9:]
    assert sorted(seq[:7]) == list(range(7))


def test_dpo_refuses_too_few_pairs(tiny_model_dir, project_path):
    with Project.create(project_path) as p:
        add_toy_preferences(p, n=2)
    run_id, _, code, events = run_inprocess(project_path, cfg_for(tiny_model_dir))
    assert code == 1 and "DPO needs at least 4" in events[-1].data["message"]
    with Project.open(project_path) as p:
        assert p.get_run(run_id)["status"] == "failed" and p.snapshots() == []


def test_packed_pair_logprobs_equal_a_plain_forward_of_each_conversation(tiny_model_dir):
    """Pairs packed in one row, each prompt once (the pair attention), give the same log-probabilities (and
    gradients flow) as running each whole conversation on its own."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from engine.trainers.dpo import collate_dpo, pair_logprobs
    from engine.reward_model import HeadedModel
    from engine.rm_data import EncodedPair

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    hm = HeadedModel(model)
    hm.add_adapter("policy", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
                   head=False, seed=0)
    pairs = [EncodedPair([1, 40, 41, 42, 43], [50, 51, 2], [60, 2]), EncodedPair([1, 44], [70, 71, 72, 73, 2], [80, 2])]
    batch = collate_dpo(pairs)
    c, r, nc, nr = pair_logprobs(hm, "policy", batch)
    assert nc.tolist() == [3, 5] and nr.tolist() == [2, 2]
    c.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in hm.trainable_parameters("policy"))

    def plain(prompt, cont):
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logits = hm.transformer()(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(cont)[:, None]).sum()

    for i, p in enumerate(pairs):
        assert torch.allclose(c[i], plain(p.prompt_ids, p.chosen_ids), atol=1e-4)
        assert torch.allclose(r[i], plain(p.prompt_ids, p.rejected_ids), atol=1e-4)
    with torch.no_grad():
        c0, _, _, _ = pair_logprobs(hm, None, batch)  # the bare base: adapters disabled
    with hm.peft.disable_adapter(), torch.no_grad():
        ids = torch.tensor([pairs[0].prompt_ids + pairs[0].chosen_ids])
        logits = hm.transformer()(input_ids=ids).logits[0, 4:-1]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(pairs[0].chosen_ids)[:, None]).sum()
    assert torch.allclose(c0[0], expected, atol=1e-4) and not torch.allclose(c0[0], c[0].detach(), atol=1e-3)


def test_gradient_checkpointing_gives_the_gradients_of_the_plain_backward(tiny_model_dir):
    """The packed layout under gradient checkpointing (the default) recomputes the pair attention in the backward:
    the same loss and the same LoRA gradients as without it."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from engine.trainers.dpo import POLICY, collate_dpo, pair_logprobs, preference_loss
    from engine.pair_attention import pairs_attention
    from engine.reward_model import HeadedModel
    from engine.rm_data import EncodedPair

    hm = HeadedModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    hm.add_adapter(POLICY, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
                   head=False, seed=0)
    pairs = [EncodedPair([1, 40, 41, 42, 43], [50, 51, 2], [60, 2], margin=0.5),
             EncodedPair([1, 44], [70, 71, 72, 73, 2], [80, 81, 82, 2]), EncodedPair([1, 45, 46], [90, 2], [91, 2])]
    batch = collate_dpo(pairs)
    ref = torch.tensor([-20.0, -30.0, -10.0]), torch.tensor([-15.0, -25.0, -12.0])

    def loss_and_grads():
        hm.peft.zero_grad(set_to_none=True)
        with pairs_attention(hm.transformer()):
            pc, pr, nc, nr = pair_logprobs(hm, POLICY, batch)
            out = preference_loss(pc, pr, *ref, nc, nr, beta=0.1, loss_type="sigmoid", margin=batch.margin,
                                  label_smoothing=0.0)
            out.losses.sum().backward()
        return out.losses.detach(), {n: p.grad.clone() for n, p in hm.peft.named_parameters() if p.requires_grad}

    hm.train(False)
    plain_loss, plain = loss_and_grads()
    hm.transformer().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hm.train(True)  # HF checkpoints layers only in training mode (LoRA dropout is 0 here)
    ckpt_loss, ckpt = loss_and_grads()
    assert hm.transformer().is_gradient_checkpointing
    torch.testing.assert_close(ckpt_loss, plain_loss)
    assert plain.keys() == ckpt.keys() and len(plain) > 0
    assert all(plain[n].abs().sum() > 0 for n in plain)
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-4, atol=1e-6)


def test_dpo_scores_the_held_out_prompts_before_during_and_after(tiny_model_dir, project_path):
    """The judgments on held-out prompts (never in the training snapshot) are scored at step 0 (every pair a tie:
    accuracy 0.5), at each evaluation and at the end; evaluate_preferences on the saved adapter agrees."""
    from engine.trainers.dpo import HELDOUT_FILE, evaluate_preferences

    with Project.create(project_path) as p:
        add_toy_preferences(p, n=32)
        for pid in p.prompt_ids()[-8:]:
            p.set_split(pid, "heldout")
    cfg = cfg_for(tiny_model_dir, eval_fraction=0.0, max_steps=12, eval_every=6)
    run_id, run_dir, code, events = run_inprocess(project_path, cfg)
    assert code == 0, events[-1]
    with Project.open(project_path) as p:
        run = p.get_run(run_id)
        acc = p.metrics(run_id, "heldout/accuracy")
        ties = {s: v for s, _, v in p.metrics(run_id, "heldout/ties")}
        held_sid = int((run_dir / HELDOUT_FILE).read_text())
        assert run["snapshot_id"] != held_sid
        from workbench.training_data import preference_pairs

        train_prompts = {pp.prompt_id for pp in preference_pairs(p, run["snapshot_id"])}
        held_prompts = {pp.prompt_id for pp in preference_pairs(p, held_sid)}
    assert len(train_prompts) == 24 and len(held_prompts) == 8 and not train_prompts & held_prompts
    assert [s for s, _, _ in acc] == [0, 6, 12]
    assert acc[0][2] == 0.5 and ties[0] == 8  # step 0: the policy is the reference
    final = run["final_metrics"]
    assert final["heldout/pairs"] == 8 and final["heldout/ties"] == 0
    assert final["heldout/accuracy"] > 0.6 and final["heldout/margin"] > 0
    assert 0 <= final["heldout/accuracy_low"] <= final["heldout/accuracy"] <= final["heldout/accuracy_high"] <= 1
    again = evaluate_preferences(project_path, run_dir / "adapter", snapshot_id=held_sid, cfg=cfg)
    assert again["accuracy"] == pytest.approx(final["heldout/accuracy"])
    assert again["margin"] == pytest.approx(final["heldout/margin"], rel=1e-4, abs=1e-6)


def test_a_fresh_policy_scores_exactly_like_its_reference(tiny_model_dir):
    """What makes step 0 all ties: a fresh LoRA adapter adds exact zeros, chunk for chunk."""
    from engine.trainers.dpo import POLICY, preference_metrics, score_pairs
    from engine.reward_model import HeadedModel
    from engine.lora import LoraSettings
    from engine.rm_data import EncodedPair
    from transformers import AutoModelForCausalLM

    hm = HeadedModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    hm.add_adapter(POLICY, LoraSettings(r=4, alpha=8).peft_config(), head=False, seed=0)
    hm.eval()
    pairs = [EncodedPair([1, 40 + i, 41, 42][: 2 + i % 3], [50, 51 + i, 2], [60, 2][: 1 + i % 2], margin=0.0)
             for i in range(5)]
    pol = score_pairs(hm, POLICY, pairs, 2, torch.device("cpu"))
    ref = score_pairs(hm, None, pairs, 2, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(pol, ref))
    res = preference_metrics(*pol[:2], *ref[:2], *pol[2:], torch.zeros(5), beta=0.1, loss_type="sigmoid")
    assert res["accuracy"] == 0.5 and res["ties"] == 5 and res["wins"] == 0
    # a pair the policy prefers by more than the tolerance is a win; the other 4 stay ties: (1 + 4/2) / 5
    bumped = pol[0].clone()
    bumped[0] += 1.0
    res = preference_metrics(bumped, pol[1], *ref[:2], *pol[2:], torch.zeros(5), beta=0.1, loss_type="sigmoid")
    assert res["wins"] == 1 and res["ties"] == 4 and res["accuracy"] == pytest.approx(0.6)
