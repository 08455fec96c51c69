"""The Playground job in-process on the tiny model: it loads once, answers chat commands from its command queue
for the base and the tuned side (adapter switched off for base), streams token events, stops on command and on
cancel (the worker fills ctx.commands from its stdin; here the test does)."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest

from engine.jobs.context import JobContext
from engine.jobs.playground import run
from workbench.configs import GenerateConfig


class Lines(io.StringIO):
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model with non-zero B matrices, so the tuned side differs from the base."""
    from tests.tiny_models import build_tiny_lora_adapter

    return build_tiny_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter")


def _start(tiny, tmp_path, adapter=None, **kw):
    cfg = GenerateConfig(base_model=str(tiny), adapter_from=str(adapter) if adapter else None, device="cpu",
                         dtype="float32", quantize="none", max_new_tokens=12, temperature=0.0, **kw)
    out = Lines()
    ctx = JobContext(stage="playground", config=cfg, run_dir=tmp_path, run_id=None, project_path=None, stdout=out)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", run(ctx)), daemon=True)
    t.start()
    return ctx, out, t, result


def _wait(pred, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_chat_streams_tokens_for_base_and_tuned_then_stops(tiny_model_dir, adapter_dir, tmp_path):
    ctx, out, t, result = _start(tiny_model_dir, tmp_path, adapter_dir)
    try:
        _wait(lambda: any(e["data"].get("level") == "ready" for e in out.events()))
        ready = next(e for e in out.events() if e["data"].get("level") == "ready")
        assert ready["data"]["sides"] == ["base", "tuned"]
        ctx.commands.put(("chat", {"id": 1, "messages": [{"role": "user", "content": "What is the capital?"}]}))
        _wait(lambda: sum(e["data"].get("level") == "reply" for e in out.events()) == 2)
        ctx.commands.put(("stop", {}))
        t.join(60)
    finally:
        ctx.request_cancel()
        t.join(30)
        ctx.close()
    assert result["r"].status == "done" and result["r"].summary["chats"] == 1
    events = [e["data"] for e in out.events()]
    replies = {d["side"]: d for d in events if d.get("level") == "reply"}
    tokens = {side: "".join(d["message"] for d in events if d.get("level") == "token" and d["side"] == side)
              for side in ("base", "tuned")}
    for side in ("base", "tuned"):
        assert replies[side]["chat"] == 1 and 0 < replies[side]["tokens"] <= 12
        assert tokens[side].strip() == replies[side]["text"]  # the streamed pieces make the whole reply
    # Greedy decoding: the adapter changes the answer, so the base side really ran without it.
    assert replies["base"]["text"] != replies["tuned"]["text"]


def test_cancel_ends_the_job(tiny_model_dir, tmp_path):
    ctx, out, t, result = _start(tiny_model_dir, tmp_path)
    try:
        _wait(lambda: any(e["data"].get("level") == "ready" for e in out.events()))
        ctx.request_cancel()
        t.join(60)
    finally:
        ctx.close()
    assert result["r"].status == "cancelled"
