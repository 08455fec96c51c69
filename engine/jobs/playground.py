"""The Playground job: a long-lived chat with a base model and, side by side, the same base with a tuned LoRA
adapter, streaming tokens as they are sampled. Stage ``playground``; its config is a ``GenerateConfig``
(base_model, adapter_from, device, dtype, quantize, temperature, top_p, top_k, max_new_tokens, max_length, seed).

The model is loaded once; then the job waits for commands. The worker's stdin listener reads them and, for every
command that is not ``cancel``, puts ``(name, args)`` on ``ctx.commands`` (a ``queue.Queue``), where this job
takes them:

- ``{"command": "chat", "id": 7, "messages": [{"role": "user", "content": "Hi"}], "sides": ["base", "tuned"],
  "temperature": 0.7, "max_new_tokens": 128}``: answer the conversation once per side (sampling settings
  override the config for this reply only);
- ``{"command": "stop"}``: end the job (status done). ``cancel`` (or SIGTERM) ends it too, also mid-reply.

Events (all ``log`` events, so they fit the job protocol): ``level="ready"`` once the model is loaded (with
``sides``); ``level="token"`` for each piece of text (``chat``, ``side``, ``message`` = the text piece);
``level="reply"`` when a side has finished (``chat``, ``side``, ``text``, ``tokens``, ``seconds``,
``tokens_per_s``). The ``base`` side of a model with an adapter is computed with the adapter switched off, so one
copy of the weights serves both sides.
"""

from __future__ import annotations

import queue
import time
from typing import Any

import torch

from workbench.jobs.protocol import Event, EventType

from . import JobError, JobResult
from .context import JobContext

POLL_S = 0.2


def _log(ctx: JobContext, level: str, message: str = "", **data: Any) -> None:
    ctx.emit(Event(EventType.LOG, {"level": level, "message": message, **data}))


def run(ctx: JobContext) -> JobResult:
    commands: queue.Queue = ctx.commands
    from ..models import load_model

    cfg = ctx.config
    loaded = load_model(cfg.base_model, device=cfg.device, dtype=cfg.dtype, quantize=cfg.quantize,
                        adapter=cfg.adapter_from or None, trust_remote_code=cfg.trust_remote_code)
    sides = ["base", "tuned"] if cfg.adapter_from else ["base"]
    _log(ctx, "ready", f"{loaded.ref} loaded on {loaded.device}" + (f" with adapter {cfg.adapter_from}" if
                                                                     cfg.adapter_from else ""), sides=sides)
    chats = 0
    tokens = 0
    while not ctx.should_stop():
        try:
            name, args = commands.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if name == "stop":
            break
        if name != "chat":
            ctx.log(f"unknown playground command {name!r} ignored", level="warning")
            continue
        try:
            tokens += _chat(ctx, loaded, cfg, args, sides)
            chats += 1
        except JobError as e:
            _log(ctx, "warning", e.message, chat=args.get("id"))
    status = "cancelled" if ctx.should_stop() else "done"
    return JobResult(status=status, summary={"chats": chats, "tokens": tokens})


class _Stop:
    def __init__(self, ctx: JobContext):
        self.ctx = ctx

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kw: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.ctx.should_stop(), dtype=torch.bool, device=input_ids.device)


def _chat(ctx: JobContext, loaded: Any, cfg: Any, args: dict[str, Any], sides: list[str]) -> int:
    from transformers import StoppingCriteriaList, TextStreamer

    from ..generation import encode_prompt

    messages = args.get("messages")
    if not isinstance(messages, list) or not messages:
        raise JobError("a chat command needs a non-empty list of messages")
    chat_id = args.get("id")
    wanted = [s for s in (args.get("sides") or sides) if s in sides]
    temperature = float(args.get("temperature", cfg.temperature))
    top_p = float(args.get("top_p", cfg.top_p))
    top_k = int(args.get("top_k", cfg.top_k))
    max_new = int(args.get("max_new_tokens", cfg.max_new_tokens))
    seed = int(args.get("seed", cfg.seed))
    model, tok = loaded.model, loaded.tokenizer
    ids = encode_prompt(tok, messages, cfg.max_length)
    input_ids = torch.tensor([ids], dtype=torch.long, device=loaded.device)
    produced = 0

    class Stream(TextStreamer):
        side = ""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                _log(ctx, "token", text, chat=chat_id, side=self.side)

    for side in wanted:
        streamer = Stream(tok, skip_prompt=True, skip_special_tokens=True)
        streamer.side = side
        torch.manual_seed(seed)
        sample = temperature > 0
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new,
            do_sample=sample, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Stop(ctx)]),
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if side == "base" and hasattr(model, "disable_adapter") and len(sides) > 1:
                with model.disable_adapter():
                    out = model.generate(**kwargs)
            else:
                out = model.generate(**kwargs)
        new = out[0, input_ids.shape[1]:].tolist()
        seconds = time.perf_counter() - t0
        text = tok.decode(new, skip_special_tokens=True).strip()
        produced += len(new)
        _log(ctx, "reply", text, chat=chat_id, side=side, text=text, tokens=len(new), seconds=round(seconds, 3),
             tokens_per_s=round(len(new) / seconds, 2) if seconds > 0 else 0.0)
        if ctx.should_stop():
            break
    return produced

