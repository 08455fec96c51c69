"""Sample candidate responses for the demo prompts with the bundled SmolLM2 and write resources/demo/demo.jsonl.

The prompts come from resources/demo/prompts.yaml. Generation goes through the project's own code: a scratch
project, ``engine.generation.generate_into_project`` (the same function the generate job runs), then each
prompt with its responses and their provenance (model, sampling parameters, seed) is written out. A prompt whose
samples came out identical or empty is sampled again with the next seed until it has at least two distinct
candidates. Run statistics and versions go to resources/demo/demo_meta.json.

    python scripts/make_demo.py [--n 2] [--max-new-tokens 160] [--seed 2026] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.messages import canonical_json  # noqa: E402
from workbench.paths import BUNDLED_MODEL_REF, RESOURCES  # noqa: E402
from workbench.store import Project  # noqa: E402

DEMO_DIR = RESOURCES / "demo"


def read_prompts(path: Path) -> list[dict]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = []
    for i, p in enumerate(data["prompts"]):
        if ("prompt" in p) == ("messages" in p):
            raise SystemExit(f"{path}: prompt #{i + 1} ({p.get('id')}) needs exactly one of 'prompt' or 'messages'")
        messages = p["messages"] if "messages" in p else [{"role": "user", "content": p["prompt"].strip()}]
        out.append({"id": p["id"], "messages": messages, "tags": list(p.get("tags", [])), "split": p.get("split", "train")})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2, help="candidates per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--repetition-penalty", type=float, default=1.1)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--batch-size", type=int, default=48, help="rows per batch: on a CPU, wide batches cost little more per step than narrow ones")
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts (for a quick try)")
    ap.add_argument("--model", default=BUNDLED_MODEL_REF)
    ap.add_argument("--prompts", type=Path, default=DEMO_DIR / "prompts.yaml")
    ap.add_argument("--out", type=Path, default=DEMO_DIR / "demo.jsonl")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from engine.generation import GenerationSettings, generate_into_project
    from engine.models import load_model

    prompts = read_prompts(args.prompts)
    if args.limit:
        prompts = prompts[: args.limit]
    loaded = load_model(args.model, device="cpu", dtype="float32", quantize="none")
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, n=args.n, seed=args.seed, batch_size=args.batch_size,
    )
    started = time.time()
    totals = {"tokens": 0, "seconds": 0.0, "rounds": 0}
    with tempfile.TemporaryDirectory() as tmp:
        project = Project.create(Path(tmp) / "scratch.wbp")
        ids = {}
        for p in prompts:
            ids[p["id"]], _ = project.add_prompt(p["messages"], source="demo", tags=p["tags"], split=p["split"])
        todo = list(ids.values())
        seed = args.seed
        while todo and totals["rounds"] < 5:
            round_settings = GenerationSettings(**settings.to_dict() | {"seed": seed})

            def progress(c: dict) -> None:
                print(f"  seed {seed}: {c['done']}/{c['total']} prompts, {c['tokens']} tokens, "
                      f"{c['tokens_per_s']} tokens/s", flush=True)

            counts = generate_into_project(
                project, args.model, todo, round_settings, loaded=loaded, compare="none", source="demo",
                on_progress=progress,
            )
            totals["tokens"] += counts["tokens"]
            totals["seconds"] += counts["seconds"]
            totals["rounds"] += 1
            todo = [pid for pid in todo if len(project.responses_for(pid)) < 2]
            if todo:
                print(f"  {len(todo)} prompt(s) with fewer than two distinct candidates: sampling again", flush=True)
            seed += 1
        if todo:
            raise SystemExit(f"prompts still without two distinct responses: {todo}")
        lines = []
        for p in prompts:
            responses = [
                {"content": r.content, "model": r.model, "adapter": r.adapter, "sampling": r.sampling, "seed": r.seed}
                for r in project.responses_for(ids[p["id"]])
            ]
            lines.append(canonical_json({**p, "responses": responses}))
        project.close()
    tmp_out = args.out.with_suffix(".jsonl.tmp")
    tmp_out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp_out, args.out)
    meta = {
        "generated_by": "scripts/make_demo.py", "model": args.model, "settings": settings.to_dict(),
        "prompts": len(prompts), "responses": sum(len(json.loads(l)["responses"]) for l in lines),
        "new_tokens": totals["tokens"], "generation_seconds": round(totals["seconds"], 1),
        "tokens_per_s": round(totals["tokens"] / totals["seconds"], 1) if totals["seconds"] else None,
        "rounds": totals["rounds"], "wall_seconds": round(time.time() - started, 1),
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (args.out.parent / "demo_meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({meta['prompts']} prompts, {meta['responses']} responses, "
          f"{meta['new_tokens']} tokens at {meta['tokens_per_s']} tokens/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
