"""Reward and safety cost from adapters + heads on the shared base (the project's reward model and safety
classifier), in the experience maker and through the ``ppo`` job."""

from __future__ import annotations

import io

import pytest
import torch
from peft import LoraConfig

from engine.generation import encode_prompt
from engine.trainers.ppo.experience_maker import ExperienceMaker
from engine.trainers.ppo.rewards import AdapterScorer
from engine.trainers.ppo.roles import REWARD, SAFETY, PpoRoles
from engine.reward_model import HeadedModel
from engine.worker import run as run_worker
from tests.engine.sft_helpers import QUESTIONS
from workbench.configs import PpoConfig
from workbench.jobs import JobClient
from workbench.store import Project


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
            AutoTokenizer.from_pretrained(tiny_model_dir))


def _headed_adapter(tiny_model_dir, path, *, out_features=1, kind="reward", labels=(), seed=0):
    model, _ = _model(tiny_model_dir)
    hm = HeadedModel(model)
    hm.add_adapter("x", LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False), head=True,
                   out_features=out_features, kind=kind, labels=labels, seed=seed)
    hm.save_adapter("x", path)
    return path


def test_reward_and_safety_cost_from_adapters_on_the_shared_base(tiny_model_dir, tmp_path):
    rm = _headed_adapter(tiny_model_dir, tmp_path / "rm")
    safety = _headed_adapter(tiny_model_dir, tmp_path / "safety", out_features=3, kind="safety",
                             labels=["violence", "hate", "self_harm"], seed=1)
    model, tok = _model(tiny_model_dir)
    roles = PpoRoles(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), seed=0)
    roles.load_frozen(REWARD, rm)
    roles.load_frozen(SAFETY, safety)
    reward = AdapterScorer(roles, REWARD, tok, 64, 4)
    cost = AdapterScorer(roles, SAFETY, tok, 64, 4, as_cost=True)
    convs = [[{"role": "user", "content": q}] for q, _ in QUESTIONS[:4]]
    texts = ["Paris.", "Eight legs.", "Blue.", "Eleven."]
    scores, costs = reward(convs, texts), cost(convs, texts)
    assert scores.shape == (4,) and costs.shape == (4,)
    assert ((costs > 0) & (costs < 1)).all()

    # The same scores as the reward model loaded on its own (a plain HeadedModel on a fresh base).
    alone_model, _ = _model(tiny_model_dir)
    alone = HeadedModel(alone_model)
    alone.load_adapter("r", rm)
    ref = AdapterScorer.__new__(AdapterScorer)
    ref.__dict__.update(reward.__dict__)
    ref.roles = type("R", (), {"hm": alone, "device": torch.device("cpu")})()
    ref.name = "r"
    assert torch.allclose(ref(convs, texts), scores, atol=1e-5)

    for weight in (0.0, 3.0):
        maker = ExperienceMaker(roles, tok, reward, cost=cost, cost_weight=weight, max_new_tokens=4,
                                normalize_reward=False, reward_clip=0.0, missing_eos_penalty=0.0)
        ids = [encode_prompt(tok, c, 48) for c in convs]
        exp, texts = maker.make(ids, convs, 0.0, torch.Generator().manual_seed(0))
        assert torch.allclose(exp.reward, exp.score - weight * exp.cost, atol=1e-6)
        assert (exp.cost > 0).all()


def test_ppo_job_with_the_projects_reward_adapter(tiny_model_dir, project_path, tmp_path):
    rm = _headed_adapter(tiny_model_dir, tmp_path / "rm")
    with Project.create(project_path) as p:
        for q, _ in QUESTIONS[:6]:
            p.add_prompt([{"role": "user", "content": q}], source="test")
    cfg = PpoConfig(base_model=str(tiny_model_dir), reward_model=str(rm), batch_size=3, rollout_batch_size=6,
                    ppo_epochs=1, max_new_tokens=4, max_steps=2, checkpoint_every=1, lora_r=4, lora_alpha=8,
                    max_length=64, seed=1)
    run_id, run_dir = JobClient(project_path).prepare("ppo", cfg)
    buf = io.StringIO()
    assert run_worker(run_dir, stdout=buf, own_process=False) == 0, buf.getvalue()[-2000:]
    with Project.open(project_path) as p:
        scores = [v for _, _, v in p.metrics(run_id, "rollout/score_mean")]
        assert len(scores) == 2 and all(s == s for s in scores)
        assert len(p.checkpoints(run_id)) == 1
    ck = run_dir / "checkpoints" / "step-00000001"
    assert (ck / "adapter" / "adapter_model.safetensors").is_file() and (ck / "value" / "head.safetensors").is_file()


def test_a_separate_reward_model_scores_like_the_shared_adapter(tiny_model_dir, tmp_path):
    """A reward model with its own copy of a base (adapter + head, ``reward_base``) or a full sequence classifier
    folder: same scores as the same weights run as an adapter of the shared base."""
    from transformers import AutoModelForSequenceClassification

    from engine.trainers.ppo.rewards import SeparateScorer

    rm = _headed_adapter(tiny_model_dir, tmp_path / "rm", seed=4)
    model, tok = _model(tiny_model_dir)
    roles = PpoRoles(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), seed=0)
    roles.load_frozen(REWARD, rm)
    shared = AdapterScorer(roles, REWARD, tok, 64, 2)
    separate = SeparateScorer(rm, base=str(tiny_model_dir), device=torch.device("cpu"), max_length=64, batch_size=3)
    convs = [[{"role": "user", "content": q}] for q, _ in QUESTIONS[:3]]
    texts = ["Paris.", "Eight legs.", "Blue."]
    assert torch.allclose(separate(convs, texts), shared(convs, texts), atol=1e-5)

    clf_dir = tmp_path / "classifier"
    clf = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    clf.config.pad_token_id = tok.pad_token_id
    clf.save_pretrained(clf_dir)
    tok.save_pretrained(clf_dir)
    full = SeparateScorer(clf_dir, base=None, device=torch.device("cpu"), max_length=64, batch_size=2)
    scores = full(convs, texts)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    cost = SeparateScorer(clf_dir, base=None, device=torch.device("cpu"), max_length=64, batch_size=2, as_cost=True)
    assert torch.allclose(cost(convs, texts), torch.sigmoid(scores), atol=1e-6)
