"""The ``eval`` job: a trained reward model's pairwise accuracy (with its 95 % Wilson interval), loss, reward
mean/spread and margin on a preference snapshot (config :class:`workbench.configs.EvalConfig`); without a
snapshot, on a new one of the held-out prompts' judgments. ``workbench eval rm`` starts it."""

from __future__ import annotations

import time
from pathlib import Path

from workbench.configs import EvalConfig, RewardConfig
from workbench.store import Project

from . import JobError, JobResult
from .context import JobContext


def evaluate_reward_model(
    project: Project,
    adapter: str | Path,
    *,
    snapshot_id: int | None = None,
    base_model: str | None = None,
    batch_size: int = 8,
    max_length: int = 512,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "auto",
    margins: dict[str, float] | None = None,
) -> dict[str, float]:
    """The metrics of :func:`engine.trainers.reward.pair_metrics` for the reward model in ``adapter`` (on the base
    its adapter records, unless ``base_model``), plus the snapshot's id."""
    from workbench.training_data import preference_snapshot, snapshot_options

    from ..lora import adapter_base
    from ..models import load_model
    from ..reward_model import HEAD_FILE, HeadedModel
    from ..training import ADAPTER
    from ..trainers.reward import PairRewards, encode_pairs, evaluate_pairs

    folder = Path(adapter)
    if not (folder / HEAD_FILE).is_file():
        raise JobError(f"{folder}: not a reward model (no {HEAD_FILE} beside the adapter)")
    base = base_model or adapter_base(folder)
    if not base:
        raise JobError(f"{folder}: the adapter does not record its base model; give the base")
    if snapshot_id is None:
        snapshot_id = preference_snapshot(project, split="heldout", note="eval rm")
    else:
        snapshot_options(project, snapshot_id, "preference")
    loaded = load_model(base, device=device, dtype=dtype, quantize=quantize)
    hm = HeadedModel(loaded.model)
    hm.load_adapter(ADAPTER, folder)
    hm.activate(ADAPTER)
    cfg = RewardConfig(max_length=max_length, margins=margins or RewardConfig().margins)
    pairs, _ = encode_pairs(project, snapshot_id, loaded.tokenizer, cfg)
    if not pairs:
        raise JobError(f"snapshot {snapshot_id} holds no preference pairs to evaluate on")
    res = evaluate_pairs(PairRewards(hm), pairs, batch_size, loaded.device)
    return {"snapshot_id": float(snapshot_id), **res}


def run(ctx: JobContext) -> JobResult:
    cfg: EvalConfig = ctx.config  # type: ignore[assignment]
    if not cfg.adapter_from:
        raise JobError("eval rm needs the reward model's adapter folder (adapter_from)")
    project = ctx.project()
    if project is None:
        raise JobError("eval rm needs a project")
    from workbench.paths import BUNDLED_MODEL_REF

    base = None if cfg.base_model == BUNDLED_MODEL_REF else cfg.base_model
    t0 = time.perf_counter()
    res = evaluate_reward_model(project, cfg.adapter_from, snapshot_id=cfg.snapshot_id, base_model=base,
                                batch_size=cfg.batch_size, max_length=cfg.max_length, device=cfg.device,
                                dtype=cfg.dtype, quantize=cfg.quantize)
    metrics = {f"eval/{k}": v for k, v in res.items()}
    ctx.metrics(0, metrics)
    ctx.log(f"accuracy {res['accuracy']:.3f} (95% interval {res['accuracy_low']:.3f}–{res['accuracy_high']:.3f}) "
            f"on {int(res['pairs'])} pairs of snapshot {int(res['snapshot_id'])}")
    return JobResult("done", str(cfg.adapter_from), metrics, {"eval_s": round(time.perf_counter() - t0, 2)})
