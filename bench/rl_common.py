"""Shared parts of the online-RL benchmarks against TRL's ``RLOOTrainer`` (``bench_rl_vs_trl``,
``bench_rl_quality_vs_trl``).

- :func:`prepare_prompts`: a scratch project of HH-RLHF helpful-base rows (our importer); the first ``n`` prompts by
  id are the training prompts (the rest, when kept, held out), frozen as a ``prompts`` snapshot; the same prompts
  go into a JSONL file for TRL **in the order our job draws them** (its seeded data order), so step s of both sides
  answers the same prompts.
- :func:`train_reward_model`: a reward model trained in the project through the command line (``workbench train
  rm``) and exported with ``workbench export-model … --format hf`` as a sequence-classification model, the form
  TRL loads as a reward function. Ours scores with the run's adapter on the shared base (how a user runs PPO on a
  project's reward model), TRL with the exported folder: the same function, up to the constant ``score_bias`` (see
  :data:`SCORE_BIAS_NOTE`).
- :func:`ppo_config`: our ``ppo`` run config with the settings the issue lists, matched with TRL's.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import HH_FILE, REPO, env_for_children, last_json, workbench_cli

SCORE_BIAS_NOTE = (
    "The export keeps the reward head's bias in config.json as score_bias (transformers' score layer has no bias), and "
    "TRL reads logits[:, 0] without it: TRL's rewards are ours minus one constant b. RLOO's advantage is a reward "
    "minus the mean of the other rewards to the same prompt, so b cancels (r_i + b - mean_j(r_j + b) = r_i - "
    "mean_j r_j); the KL penalty does not involve it, TRL's optional advantage normalisation is shift-invariant too, "
    "and only its optional reward clipping (off by default) or the logged reward means would see b."
)


@dataclass
class PromptData:
    project: str
    snapshot_id: int
    prompts_jsonl: str  # TRL's prompts, in the order our job draws them
    train_prompts: int
    heldout_prompts: int
    heldout: list[list[dict[str, str]]]  # the held-out prompts' messages (quality benchmark)


def prepare_prompts(workdir: Path, n_train: int | None, *, rows: int | None = None, heldout: int = 0, seed: int = 42,
                    draws: int = 0) -> PromptData:
    """A project of HH helpful-base rows: ``n_train`` training prompts (the first by id, once ``heldout`` prompts
    drawn at random are set to the held-out split; None: all of them) frozen as a prompts snapshot, and their JSONL for TRL.
    ``draws``: how many prompts our job takes in its first epoch (steps × prompts per step); TRL's file starts with
    them, in that order."""
    import random

    from bench.real_data import real_data_dir
    from engine.trainers.ppo.data import SNAPSHOT_KIND, snapshot_prompts
    from engine.training import DataOrder
    from workbench.importers import import_file
    from workbench.store import Project

    workdir.mkdir(parents=True, exist_ok=True)
    rows = rows or max(2 * ((n_train or 0) + heldout), 64)
    raw = workdir / "hh.jsonl"
    with gzip.open(real_data_dir() / HH_FILE, "rt", encoding="utf-8") as src, open(raw, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= rows:
                break
            dst.write(line)
    path = workdir / "rl.wbp"
    with Project.create(path) as project:
        import_file(project, raw, "hh-rlhf")
        ids = project.prompt_ids()
        held = sorted(random.Random(seed).sample(ids, min(heldout, len(ids) // 2))) if heldout else []
        for pid in held:
            project.set_split(pid, "heldout")
        train = project.prompt_ids(split="train")[:n_train]
        if n_train is not None and len(train) < n_train:
            raise SystemExit(f"only {len(train)} training prompts in the first {rows} HH rows; {n_train} are needed")
        # Exactly these prompts for RL (the other training prompts' comparisons remain for the reward model).
        sid = project.create_snapshot(SNAPSHOT_KIND, {"prompt": train}, options={"split": "train"},
                                      note=f"bench: the first {len(train)} training prompts")
        prompts = [msgs for _, msgs in snapshot_prompts(project, sid)]
        held_msgs = [project.get_prompt(pid).messages for pid in held]
    # Within one epoch our data order is a permutation: its first ``draws`` prompts, then the others.
    first = DataOrder(len(prompts), seed).take(min(draws, len(prompts)))
    rest = [i for i in range(len(prompts)) if i not in set(first)]
    jsonl = workdir / "prompts.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for i in first + rest:
            f.write(json.dumps({"prompt": prompts[i]}) + "\n")
    return PromptData(str(path), sid, str(jsonl), len(prompts), len(held), held_msgs)


def train_reward_model(project: str, workdir: Path, *, steps: int, threads: int, lr: float = 5e-4,
                       lora_top_layers: int | None = None) -> tuple[str, str, dict[str, Any]]:
    """(our reward adapter folder, its hf export folder, figures) — trained and exported through the command
    line, as a user would."""
    cfg_path = workdir / "rm.yaml"
    from workbench.configs import RewardConfig

    RewardConfig(device="cpu", dtype="float32", quantize="none", max_steps=steps, batch_size=8, max_length=512, lr=lr,
                 lora_top_layers=lora_top_layers, checkpoint_every=0, eval_fraction=0.1, num_threads=threads,
                 name="bench: reward model for RL").save(cfg_path)
    t0 = time.perf_counter()
    out = subprocess.run(workbench_cli("train", "rm", project, "--config", str(cfg_path), "--quiet"), cwd=REPO,
                         env=env_for_children(), capture_output=True, text=True)
    summary = last_json(out.stdout)
    if out.returncode != 0 or summary.get("status") != "done":
        raise SystemExit(f"reward model training failed: {summary.get('error') or out.stderr[-2000:]}")
    adapter = summary["output"]
    rm_s = time.perf_counter() - t0
    export = workdir / "rm-hf"
    shutil.rmtree(export, ignore_errors=True)
    out = subprocess.run(workbench_cli("export-model", adapter, str(export), "--format", "hf", "--dtype", "float32",
                                       "--threads", str(threads), "--quiet"), cwd=REPO, env=env_for_children(),
                         capture_output=True, text=True)
    exported = last_json(out.stdout)
    if out.returncode != 0 or exported.get("status") != "done":
        raise SystemExit(f"reward model export failed: {exported.get('error') or out.stderr[-2000:]}")
    config = json.loads((export / "config.json").read_text())
    metrics = summary.get("metrics") or {}
    return adapter, str(export), {"rm_steps": steps, "rm_train_s": round(rm_s, 1),
                                  "rm_eval_accuracy": metrics.get("eval/accuracy"),
                                  "score_bias": config.get("score_bias")}


def ppo_config(*, snapshot_id: int, reward_model: str, steps: int, threads: int, samples_per_prompt: int = 4,
               prompts_per_step: int = 4, max_new_tokens: int = 32, lora_r: int = 16, lr: float = 1e-6,
               kl_coef: float = 0.05, seed: int = 42, **more: Any):
    """Our run config: the issue's settings (rloo, k=4, 4 prompts a step, one PPO epoch, 32 new tokens, no
    missing-EOS penalty, LoRA r=16, batch 16, the step count), plus what must match TRL's defaults: fp32 on the
    CPU, a fixed KL coefficient of TRL's beta, the raw reward (TRL neither normalises nor clips it), sampling at
    temperature 1 with no top-p or top-k, TRL's learning rate. No checkpoints and no stored samples (TRL saves none)."""
    from workbench.configs import PpoConfig

    settings = dict(
        base_model="bundled:SmolLM2-135M-Instruct", device="cpu", dtype="float32", quantize="none",
        snapshot_id=snapshot_id, reward_model=reward_model, advantage_estimator="rloo",
        samples_per_prompt=samples_per_prompt, rollout_batch_size=prompts_per_step, ppo_epochs=1,
        max_new_tokens=max_new_tokens, missing_eos_penalty=0.0, lora_r=lora_r, batch_size=prompts_per_step * samples_per_prompt,
        max_steps=steps, lr=lr, warmup_ratio=0.0, kl_coef=kl_coef, adaptive_kl=False, normalize_reward=False,
        reward_clip=0.0, temperature=1.0, top_p=1.0, top_k=0, checkpoint_every=0, sample_every=0, seed=seed,
        num_threads=threads, name="bench: online RL vs TRL",
    )
    settings.update(more)
    return PpoConfig(**settings)


def steady(per_step: list[dict[str, float]], keys: tuple[str, ...] = ("step_s", "sample_s", "score_s", "update_s"),
           skip: int = 1) -> dict[str, float]:
    """Mean of each phase over the steps after the first ``skip`` (warm-up); over all steps when there are no more."""
    rows = per_step[skip:] or per_step
    return {k: round(sum(r[k] for r in rows) / len(rows), 2) for k in keys if rows and all(k in r for r in rows)}


def machine_load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
