"""The ``generate`` job through the worker (in-process, tiny model): prompt selection, responses with provenance,
queued comparisons, progress and a done event with counts; bad selections fail with a clear message."""

from __future__ import annotations

import io
import itertools

import pytest

from engine.jobs import JobError
from engine.jobs.generate import select_prompts
from engine.worker import run as run_worker
from workbench.configs import GenerateConfig
from workbench.jobs import JobClient
from workbench.jobs.protocol import Event, EventType
from workbench.store import Project


def events_of(buf: io.StringIO) -> list[Event]:
    return [Event.from_json(line) for line in buf.getvalue().splitlines() if line.strip()]


def run_inprocess(project_path, cfg: GenerateConfig):
    run_id, run_dir = JobClient(project_path).prepare("generate", cfg)
    buf = io.StringIO()
    code = run_worker(run_dir, stdout=buf, own_process=False)
    return run_id, code, events_of(buf)


def cfg_for(tiny_model_dir, **kw) -> GenerateConfig:
    # Full-vocabulary sampling at temperature 1: the tiny model's samples of one prompt differ.
    base = dict(base_model=str(tiny_model_dir), device="cpu", n_per_prompt=2, max_new_tokens=8, temperature=1.0,
                top_p=1.0, top_k=0, batch_size=4, seed=11)
    base.update(kw)
    return GenerateConfig(**base)


@pytest.fixture
def gen_project(project_path):
    """Three training prompts (two tagged), one held-out prompt; prompt 1 already has an imported response."""
    with Project.create(project_path) as p:
        p.add_prompt([{"role": "user", "content": "Write a greeting for a friend."}], tags=["greet"])
        p.add_prompt([{"role": "user", "content": "Say hello in French."}], tags=["greet"])
        p.add_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}])
        p.add_prompt([{"role": "user", "content": "A held-out question."}], split="heldout")
        p.add_response(1, "Hello, my friend!")
    return project_path


def test_prompt_selection(gen_project):
    with Project.open(gen_project) as p:
        sid = p.create_snapshot("preference", {"comparison": [p.add_comparison(4, *[
            p.add_response(4, t)[0] for t in ("yes", "no")])]})
        select = lambda **kw: select_prompts(p, GenerateConfig(**kw))  # noqa: E731
        assert select() == [1, 2, 3]  # every training prompt
        assert select(split="heldout") == [4]
        assert select(tag="greet") == [1, 2]
        assert select(prompt_ids=[3, 1, 3, 4]) == [1, 3, 4]  # explicit ids: any split, once each
        assert select(prompt_ids=[1, 4], split="train") == [1]
        assert select(snapshot_id=sid) == [4]  # the prompt of the snapshot's comparison
        with pytest.raises(JobError, match="no prompt with id 99"):
            select(prompt_ids=[1, 99])
        with pytest.raises(JobError, match="no snapshot with id 42"):
            select(snapshot_id=42)


def test_generate_job_stores_responses_with_provenance_and_queues_comparisons(gen_project, tiny_model_dir):
    cfg = cfg_for(tiny_model_dir)
    run_id, code, events = run_inprocess(gen_project, cfg)
    assert code == 0, [e.data for e in events if e.type == EventType.ERROR]
    done = [e for e in events if e.type == EventType.DONE]
    assert len(done) == 1
    summary = done[0].data["summary"]
    progress = [e for e in events if e.type == EventType.PROGRESS]
    assert progress[0].step == 0 and progress[-1].step == 3 and progress[-1].data["total"] == 3
    assert summary["prompts"] == 3 and summary["sequences"] == 6 and summary["tokens"] > 0
    assert summary["tokens_per_s"] > 0
    assert summary["responses"] + summary["duplicates"] + summary["empty"] == 6
    assert summary["responses"] >= 4  # random bytes from a tiny model: an empty or repeated sample is rare

    with Project.open(gen_project) as p:
        assert p.get_run(run_id)["status"] == "done"
        new = [r for pid in (1, 2, 3, 4) for r in p.responses_for(pid) if r.origin == "model"]
        assert len(new) == summary["responses"]
        assert not p.responses_for(4)  # held-out prompts are left out by default
        for r in new:
            assert r.model == str(tiny_model_dir) and r.adapter is None and r.seed == cfg.seed
            assert r.source == "generate"
            assert r.sampling["temperature"] == 1.0 and r.sampling["top_k"] == 0 and r.sampling["max_new_tokens"] == 8
            assert r.sampling["sample_index"] in (0, 1) and r.sampling["finish_reason"] in ("stop", "length")
        # The new responses of a prompt are paired with each other (not with the imported one), all pending.
        pending = p.comparisons()
        assert len(pending) == summary["comparisons"] == p.pending_count()
        expected = {frozenset(pair) for pid in (1, 2, 3)
                    for pair in itertools.combinations([r.id for r in new if r.prompt_id == pid], 2)}
        assert {frozenset((c.response_a, c.response_b)) for c in pending} == expected
        assert all(c.verdict is None and c.kind == "train" for c in pending)
        metrics = {k for _, k, _ in p.metrics(run_id)}
    assert {"generate/responses", "generate/comparisons", "generate/tokens_per_s"} <= metrics

    # The same seed again adds nothing new (same samples) and queues nothing twice.
    _, code, events = run_inprocess(gen_project, cfg)
    again = next(e for e in events if e.type == EventType.DONE).data["summary"]
    assert code == 0 and again["responses"] == 0 and again["comparisons"] == 0
    assert again["duplicates"] == summary["responses"]


def test_compare_with_existing_and_no_queue(gen_project, tiny_model_dir):
    _, code, events = run_inprocess(gen_project, cfg_for(tiny_model_dir, prompt_ids=[1], compare_with_existing=True))
    summary = next(e for e in events if e.type == EventType.DONE).data["summary"]
    assert code == 0 and summary["responses"] == 2
    with Project.open(gen_project) as p:
        # Two new responses: one pair between them, and each paired with the imported "Hello, my friend!".
        assert p.pending_count() == summary["comparisons"] == 3
        before = p.pending_count()
    _, code, events = run_inprocess(gen_project, cfg_for(tiny_model_dir, prompt_ids=[2], queue_comparisons=False,
                                                         seed=12))
    summary = next(e for e in events if e.type == EventType.DONE).data["summary"]
    assert code == 0 and summary["responses"] == 2 and summary["comparisons"] == 0
    with Project.open(gen_project) as p:
        assert p.pending_count() == before and len(p.responses_for(2)) == 2


def test_nothing_to_generate_fails_with_a_clear_message(gen_project, tiny_model_dir):
    run_id, code, events = run_inprocess(gen_project, cfg_for(tiny_model_dir, tag="no-such-tag"))
    errors = [e for e in events if e.type == EventType.ERROR]
    assert code == 1 and errors and "no prompts to generate for" in errors[0].data["message"]
    assert errors[0].data["kind"] == "input"
    with Project.open(gen_project) as p:
        run = p.get_run(run_id)
        assert run["status"] == "failed" and "no prompts" in run["error"]
        assert p.stats()["responses"] == 1
