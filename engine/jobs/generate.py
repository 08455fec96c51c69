"""The ``generate`` stage: sample candidate responses for a set of prompts and queue them for annotation.

The config is a :class:`workbench.configs.GenerateConfig`. Prompts: ``prompt_ids`` when given, else the prompts the
snapshot ``snapshot_id`` refers to (its ``prompt`` items and the prompts of its comparisons, rankings,
demonstrations, flags and responses), else every prompt of the project; then narrowed to ``tag`` and ``split``
(``split`` defaults to train for the whole-project case only). The sampling itself, storing responses with
provenance (origin ``model``) and queueing pending comparisons is :func:`engine.generation.generate_into_project`;
this module only chooses the prompts, reports progress and sums up. Each prompt's results are committed as soon as
its batch is done, so a cancelled run keeps what it finished.
"""

from __future__ import annotations

import time
from typing import Any

from workbench.configs import GenerateConfig
from workbench.store import Project

from . import JobError, JobResult
from .context import JobContext

def select_prompts(project: Project, cfg: GenerateConfig) -> list[int]:
    """The prompt ids a generate config asks for, in id order (see the module docstring)."""
    if cfg.prompt_ids:
        ids = list(dict.fromkeys(int(i) for i in cfg.prompt_ids))
        known = project.known_prompt_ids(ids)
        missing = [i for i in ids if i not in known]
        if missing:
            raise JobError(f"prompt_ids: no prompt with id {', '.join(map(str, missing[:5]))}"
                           + (" …" if len(missing) > 5 else ""))
        split = cfg.split
    elif cfg.snapshot_id is not None:
        if project.get_snapshot(cfg.snapshot_id) is None:
            raise JobError(f"snapshot_id: no snapshot with id {cfg.snapshot_id}")
        ids = project.snapshot_prompt_ids(cfg.snapshot_id)
        split = cfg.split
    else:
        ids = project.prompt_ids()
        split = cfg.split or "train"
    if split or cfg.tag:
        allowed = set(project.prompt_ids(split=split, tag=cfg.tag))
        ids = [i for i in ids if i in allowed]
    return sorted(ids)


def settings_of(cfg: GenerateConfig) -> Any:
    """The sampling settings of a generate config."""
    from ..generation import GenerationSettings

    return GenerationSettings(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
        repetition_penalty=cfg.repetition_penalty, n=cfg.n_per_prompt, seed=cfg.seed, batch_size=cfg.batch_size,
        max_prompt_tokens=cfg.max_length,
    )


def _compare_mode(cfg: GenerateConfig) -> str:
    if not cfg.queue_comparisons:
        return "none"
    return "all" if cfg.compare_with_existing else "new"


def run(ctx: JobContext) -> JobResult:
    from ..generation import estimate_batches, generate_into_project
    from ..models import load_model

    cfg: GenerateConfig = ctx.config  # type: ignore[assignment]
    project = ctx.project()
    if project is None:
        raise JobError("generation needs a project to store its responses in")
    prompt_ids = select_prompts(project, cfg)
    if not prompt_ids:
        raise JobError("no prompts to generate for (check prompt_ids, snapshot_id, tag and split)")
    settings = settings_of(cfg)
    started = time.perf_counter()
    loaded = load_model(cfg.base_model, device=cfg.device, dtype=cfg.dtype, quantize=cfg.quantize,
                        adapter=cfg.adapter_from or None, trust_remote_code=cfg.trust_remote_code)
    load_s = time.perf_counter() - started
    ctx.log(f"{loaded.ref} loaded on {loaded.device}" + (f" with adapter {cfg.adapter_from}" if cfg.adapter_from
                                                          else "") + f" in {load_s:.1f}s; {len(prompt_ids)} prompt(s) "
            f"× {settings.n} response(s), about {estimate_batches(len(prompt_ids), settings)} batch(es)")
    total = len(prompt_ids)
    ctx.progress(0, total)

    def on_progress(counts: dict[str, Any]) -> None:
        ctx.progress(int(counts["done"]), total, tokens_per_s=counts["tokens_per_s"], responses=counts["responses"],
                     comparisons=counts["comparisons"])

    counts = generate_into_project(
        project, cfg.base_model, prompt_ids, settings, adapter=cfg.adapter_from or None, compare=_compare_mode(cfg),
        source="generate", loaded=loaded, should_stop=ctx.should_stop, on_progress=on_progress,
    )
    final = {"generate/responses": counts["responses"], "generate/comparisons": counts["comparisons"],
             "generate/duplicates": counts["duplicates"], "generate/empty": counts["empty"],
             "generate/tokens": counts["tokens"], "generate/tokens_per_s": counts["tokens_per_s"]}
    ctx.metrics(total, final)
    ctx.log(f"added {counts['responses']} response(s) ({counts['duplicates']} duplicate(s), {counts['empty']} empty) "
            f"and queued {counts['comparisons']} comparison(s); {counts['tokens_per_s']:.1f} tokens/s")
    summary = {
        "prompts": counts["prompts"], "responses": counts["responses"], "comparisons": counts["comparisons"],
        "duplicates": counts["duplicates"], "empty": counts["empty"], "sequences": counts["sequences"],
        "tokens": counts["tokens"], "tokens_per_s": counts["tokens_per_s"], "generate_s": counts["seconds"],
        "load_s": round(load_s, 2),
    }
    return JobResult(status="cancelled" if counts["cancelled"] else "done", final_metrics=final, summary=summary)
