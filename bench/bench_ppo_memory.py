"""Peak memory of one PPO step: ours (one base, roles as adapters) against the four-model arrangement and our SFT.

    python -m bench.bench_ppo_memory [--batch-size 8] [--prompt-tokens 64] [--response-tokens 64] [--lora-r 16] [--json]

Each side runs in a fresh process and reports its peak resident memory (``ru_maxrss``), on the bundled
SmolLM2-135M in fp32 on the CPU, with the same batch, prompt and response lengths (responses are forced to the full
length: no end-of-sequence token can stop them), LoRA r on all linear layers:

- ``ours``: ``engine.trainers.ppo``: one base; policy LoRA, reference = the bare base, value LoRA + head, reward = a reward
  adapter + head (saved by ``engine.reward_model.HeadedModel``, as a `train rm` run writes it); one rollout
  (sampling, log-probs, reference, values, reward) and one PPO epoch over it (micro-batches of ``--micro``).
- ``four``: the classic arrangement built with plain transformers + peft: four full copies — policy
  (``AutoModelForCausalLM`` + LoRA, trained), reference (``AutoModelForCausalLM``, frozen), value
  (``AutoModelForSequenceClassification`` + LoRA + score head, trained), reward (``AutoModelForSequenceClassification``,
  frozen); the same rollout (``generate`` with sampling) and one update of policy and value with the same losses.
  (The reward adapter is written beforehand by a separate process, ``--side rm``.)
- ``sft``: our SFT step (``engine.trainers.sft``: packed batch, LoRA) on batch-size examples of prompt + response tokens.

Targets: ours ≤ 0.35 × four, ours ≤ 1.3 × sft.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent


def _peak_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _prompts(tok, n: int, tokens: int) -> list[list[int]]:
    """n chat prompts of exactly ``tokens`` tokens (a user turn padded with words, then cut to length from the left
    of the user text)."""
    out = []
    for i in range(n):
        words = " ".join(f"word{i}_{j}" for j in range(tokens))
        ids = tok.apply_chat_template([{"role": "user", "content": words}], add_generation_prompt=True, tokenize=True,
                                      return_dict=False)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        out.append(ids[:3] + ids[len(ids) - (tokens - 3):])
    return out


def side_ours(args) -> dict:
    import torch
    from peft import LoraConfig

    from engine.models import load_model
    from engine.trainers.ppo.experience_maker import ExperienceMaker
    from engine.trainers.ppo.rewards import AdapterScorer
    from engine.trainers.ppo.roles import POLICY, REWARD, VALUE, PpoRoles
    from engine.trainers.ppo.trainer import PpoTrainer
    from engine.reward_model import HeadedModel

    torch.manual_seed(0)
    lora = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear")
    rm_dir = Path(args.rm_dir)
    loaded = load_model(args.base, device="cpu", dtype="float32", quantize="none")
    roles = PpoRoles(loaded.model, lora, seed=0)
    roles.load_frozen(REWARD, rm_dir)
    tok = loaded.tokenizer
    reward = AdapterScorer(roles, REWARD, tok, args.prompt_tokens + args.response_tokens + 16, args.micro)
    maker = ExperienceMaker(roles, tok, reward, max_new_tokens=args.response_tokens, forward_batch_size=args.micro,
                            eos_ids=[10**9])
    opt = torch.optim.AdamW([{"params": roles.parameters_of(POLICY)}, {"params": roles.parameters_of(VALUE)}], lr=1e-5)
    trainer = PpoTrainer(roles, opt, ppo_epochs=1, mini_batch_size=args.batch_size, micro_batch_size=args.micro)
    ids = _prompts(tok, args.batch_size, args.prompt_tokens)
    convs = [[{"role": "user", "content": tok.decode(p, skip_special_tokens=True)}] for p in ids]
    t0 = time.perf_counter()
    exp, _ = maker.make(ids, convs, 0.05, torch.Generator().manual_seed(0))
    trainer.step(exp, torch.Generator().manual_seed(1))
    return {"side": "ours", "seconds": round(time.perf_counter() - t0, 1), "response_tokens": int(exp.response_mask.sum()),
            "peak_rss_mb": _peak_mb()}


def side_rm(args) -> dict:
    """Write a reward adapter + head (as a `train rm` run writes it) for the ``ours`` side, in its own process."""
    from peft import LoraConfig

    from engine.models import load_model
    from engine.reward_model import HeadedModel

    model = load_model(args.base, device="cpu", dtype="float32", quantize="none").model
    hm = HeadedModel(model)
    hm.add_adapter("rm", LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear"), head=True)
    hm.save_adapter("rm", args.rm_dir)
    return {"side": "rm", "path": args.rm_dir}


def side_four(args) -> dict:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from engine.losses import clipped_policy_loss, clipped_value_loss, gae, whiten
    from engine.models import resolve_model_path

    torch.manual_seed(0)
    path = str(resolve_model_path(args.base))
    tok = AutoTokenizer.from_pretrained(path)
    kw = dict(dtype=torch.float32)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(path, **kw),
                            LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type=TaskType.CAUSAL_LM))
    reference = AutoModelForCausalLM.from_pretrained(path, **kw).eval().requires_grad_(False)
    value = get_peft_model(AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kw),
                           LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type=TaskType.SEQ_CLS))
    reward = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kw).eval().requires_grad_(False)
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    ids = _prompts(tok, args.batch_size, args.prompt_tokens)
    x = torch.tensor(ids)
    att = torch.ones_like(x)
    P, R = x.shape[1], args.response_tokens
    t0 = time.perf_counter()
    with torch.no_grad():
        seq = policy.generate(input_ids=x, attention_mask=att, do_sample=True, top_p=1.0, max_new_tokens=R,
                              min_new_tokens=R, pad_token_id=tok.pad_token_id)
        full = torch.ones_like(seq)

        def lp(model, s):
            logits = model(input_ids=s, attention_mask=torch.ones_like(s)).logits[:, P - 1 : -1].float()
            return torch.log_softmax(logits, -1).gather(-1, s[:, P:, None]).squeeze(-1)

        old, ref = [], []
        vals, scores = [], []
        for i in range(0, len(seq), args.micro):
            s = seq[i : i + args.micro]
            old.append(lp(policy, s))
            ref.append(lp(reference, s))
            hid = value(input_ids=s, attention_mask=torch.ones_like(s), output_hidden_states=True)
            # per-token values: the score head on every response position
            vals.append(value.base_model.model.score(hid.hidden_states[-1][:, P - 1 : -1]).squeeze(-1))
            scores.append(reward(input_ids=s, attention_mask=torch.ones_like(s)).logits[:, 0])
        old, ref, vals, score = torch.cat(old), torch.cat(ref), torch.cat(vals), torch.cat(scores)
    mask = torch.ones_like(old)
    rewards = -0.05 * (old - ref)
    rewards[:, -1] += score
    adv, ret = gae(rewards, vals, mask)
    adv = whiten(adv, mask)
    opt = torch.optim.AdamW([p for m in (policy, value) for p in m.parameters() if p.requires_grad], lr=1e-5)
    for i in range(0, len(seq), args.micro):
        s = seq[i : i + args.micro]
        sl = slice(i, i + args.micro)
        logits = policy(input_ids=s, attention_mask=torch.ones_like(s)).logits[:, P - 1 : -1].float()
        newlp = torch.log_softmax(logits, -1).gather(-1, s[:, P:, None]).squeeze(-1)
        pl = clipped_policy_loss(newlp, old[sl], adv[sl], mask[sl]).loss
        hid = value(input_ids=s, attention_mask=torch.ones_like(s), output_hidden_states=True)
        v = value.base_model.model.score(hid.hidden_states[-1][:, P - 1 : -1]).squeeze(-1)
        vl = clipped_value_loss(v, vals[sl], ret[sl], mask[sl]).loss
        ((pl + 0.1 * vl) * len(s) / len(seq)).backward()  # one backward of the summed losses, as on our side
    opt.step()
    return {"side": "four", "seconds": round(time.perf_counter() - t0, 1), "response_tokens": int(mask.sum()),
            "peak_rss_mb": _peak_mb(), "sequences": int(full.shape[0])}


def side_sft(args) -> dict:
    import torch

    from engine.packing import Encoded, PackedBatch, pack, packed_token_losses, register_packed_attention
    from engine.training import load_for_training
    from workbench.configs import SftConfig

    torch.manual_seed(0)
    register_packed_attention()
    cfg = SftConfig(base_model=args.base, device="cpu", dtype="float32", quantize="none", lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                    batch_size=args.batch_size)
    model, tok = load_for_training(cfg, torch.device("cpu"), attn_implementation="wb_packed")
    ids = _prompts(tok, args.batch_size, args.prompt_tokens)
    g = torch.Generator().manual_seed(0)
    examples = [Encoded(p + torch.randint(100, 20000, (args.response_tokens,), generator=g).tolist(), len(p)) for p in ids]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    t0 = time.perf_counter()
    batch: PackedBatch = pack(examples)
    loss = packed_token_losses(model, batch).sum() / batch.n_targets
    loss.backward()
    opt.step()
    return {"side": "sft", "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": _peak_mb()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="bundled:SmolLM2-135M-Instruct",
                    help="model for all sides (default: the bundled SmolLM2; any folder engine.models loads)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--micro", type=int, default=8, help="micro-batch of the forward/backward passes (both PPO sides)")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--response-tokens", type=int, default=64)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", choices=("ours", "four", "sft"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--side", choices=("ours", "four", "sft", "rm"), help=argparse.SUPPRESS)
    ap.add_argument("--rm-dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps({"ours": side_ours, "four": side_four, "sft": side_sft, "rm": side_rm}[args.side](args)))
        return 0
    from bench.machine import describe

    common = ["--base", args.base, "--batch-size", str(args.batch_size), "--micro", str(args.micro), "--prompt-tokens", str(args.prompt_tokens),
              "--response-tokens", str(args.response_tokens), "--lora-r", str(args.lora_r), "--threads", str(args.threads)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    results = {}
    rm_dir = tempfile.mkdtemp(prefix="bench-rm-")
    common += ["--rm-dir", rm_dir]
    subprocess.run([sys.executable, "-m", "bench.bench_ppo_memory", *common, "--side", "rm"], cwd=REPO, env=env,
                   capture_output=True, text=True, check=True)
    for side in ("ours", "four", "sft"):
        if args.only and side != args.only:
            continue
        proc = subprocess.run([sys.executable, "-m", "bench.bench_ppo_memory", *common, "--side", side], cwd=REPO,
                              env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        results[side] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
            "error": f"exit {proc.returncode}", "stderr": proc.stderr[-1500:]}
    print("== PPO peak memory: one base with adapters vs four models vs SFT ==")
    print(f"machine: {describe()}")
    print(f"setting: {args.base} fp32 CPU, batch {args.batch_size} (micro {args.micro}), prompt "
          f"{args.prompt_tokens} + response {args.response_tokens} tokens, LoRA r={args.lora_r} all-linear")
    for side, r in results.items():
        print(f"  {side:5s} " + (f"peak RSS {r['peak_rss_mb']:7.0f} MB  ({r['seconds']} s)" if "error" not in r
                                 else f"FAILED {r['error']}\n{r['stderr']}"))
    out = {"results": results}
    ok = lambda s: s in results and "error" not in results[s]  # noqa: E731
    if ok("ours") and ok("four"):
        ratio = results["ours"]["peak_rss_mb"] / results["four"]["peak_rss_mb"]
        out["ours_over_four"] = round(ratio, 3)
        print(f"  ours / four-model = {ratio:.3f} (target <= 0.35): {'PASS' if ratio <= 0.35 else 'FAIL'}")
    if ok("ours") and ok("sft"):
        ratio = results["ours"]["peak_rss_mb"] / results["sft"]["peak_rss_mb"]
        out["ours_over_sft"] = round(ratio, 3)
        print(f"  ours / SFT = {ratio:.3f} (target <= 1.3): {'PASS' if ratio <= 1.3 else 'FAIL'}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
