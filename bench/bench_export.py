"""Export of a SmolLM2 SFT run to ``hf`` and to ``gguf`` f16: wall time and peak memory of each export process; then
the GGUF run by llama.cpp itself (through ``llama-cpp-python``) against the merged model's greedy text on 8 prompts.

    python bench/bench_export.py [--steps 4] [--adapter RUN/adapter] [--llama-python PATH] [--no-install] [--json]

1. Unless ``--adapter`` is given, a scratch project gets a few demonstrations and ``workbench train sft`` runs
   ``--steps`` steps on the bundled SmolLM2.
2. ``workbench export-model`` writes the run as ``hf`` and as ``gguf`` (f16), each in its own worker process: its
   wall time, the worker's peak resident memory (``ru_maxrss``: loading, merging, writing and the export's own
   checks), the size on disk and the checks' figures are reported.
3. llama.cpp: ``llama-cpp-python`` compiles llama.cpp from source (minutes of every core), so it is never part of the
   project's set-up. The benchmark uses the Python given with ``--llama-python``, else ``.venv-llama/`` in the
   repository, which it creates and installs ``llama-cpp-python`` into on first use (``--no-install``: never). If it
   cannot be built here, the benchmark says so and the transformers read-back the export ran itself stands.
   On 8 prompts, the merged model (the ``hf`` export, loaded by transformers in float32) and llama.cpp (the GGUF)
   generate greedily from the same prompt tokens; the report gives, per prompt, whether the tokens agree and where
   they first part, and whether llama.cpp tokenizes the rendered prompt to the same ids and renders the GGUF's chat
   template to the same text (``create_chat_completion``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.export.checks import FIXED_PROMPTS  # noqa: E402 - after the path set-up

LLAMA_VENV = REPO / ".venv-llama"
PROMPTS = FIXED_PROMPTS  # the export's own fixed check prompts
DEMOS = [
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What do bees make?", "Bees make honey and wax."),
    ("What is two plus two?", "Two plus two is four."),
    ("Which planet is called the red planet?", "Mars is called the red planet."),
    ("What is water made of?", "Water is made of hydrogen and oxygen."),
    ("How many days are in a week?", "A week has seven days."),
]


def _cli(*args: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", *args, "--quiet"], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"status": "failed", "error": proc.stderr[-500:]}
    result["measured_wall_s"] = round(time.perf_counter() - started, 1)
    if result.get("status") != "done":
        raise SystemExit(f"workbench {args[0]} failed: {result.get('error') or proc.stderr[-1000:]}")
    return result


def train(workdir: Path, steps: int) -> str:
    from workbench.store import Project

    project = workdir / "bench.wbp"
    with Project.create(project) as p:
        for question, answer in DEMOS:
            pid, _ = p.add_prompt([{"role": "user", "content": question}])
            p.add_demonstration(pid, answer)
    result = _cli("train", "sft", str(project), "--max-steps", str(steps), "--batch-size", "2", "--lora-r", "8",
                  "--lr", "1e-3", "--max-length", "256")
    return result["output"]


def llama_python(args: argparse.Namespace) -> tuple[str | None, str]:
    """A Python that imports llama_cpp, and how it was found (or why there is none)."""
    candidates = [args.llama_python] if args.llama_python else [str(LLAMA_VENV / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists():
            ok = subprocess.run([python, "-c", "import llama_cpp; print(llama_cpp.__version__)"], capture_output=True,
                                text=True)
            if ok.returncode == 0:
                return python, f"llama-cpp-python {ok.stdout.strip()} ({python})"
    if args.llama_python or args.no_install:
        return None, "llama-cpp-python is not importable there and --no-install was given" if args.no_install else \
            f"{args.llama_python} cannot import llama_cpp"
    print(f"building llama-cpp-python into {LLAMA_VENV} (compiles llama.cpp; minutes) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LLAMA_VENV)], check=True)
    build = subprocess.run([str(LLAMA_VENV / "bin" / "pip"), "install", "llama-cpp-python"], capture_output=True,
                           text=True)
    if build.returncode != 0:
        return None, "llama-cpp-python could not be built here: " + build.stderr.strip().splitlines()[-1][:300]
    return llama_python(argparse.Namespace(**{**vars(args), "no_install": True}))


_LLAMA_SCRIPT = textwrap.dedent("""
    import json, sys
    from llama_cpp import Llama
    job = json.load(open(sys.argv[1]))
    llm = Llama(model_path=job["gguf"], n_ctx=1024, n_threads=job["threads"], verbose=True, seed=0)
    out = []
    for item in job["prompts"]:
        ids = llm.tokenize(item["text"].encode(), add_bos=False, special=True)
        tokens = []
        for tok in llm.generate(item["ids"], temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
            if llm.token_eos() == tok or len(tokens) >= job["max_new_tokens"]:
                break
            tokens.append(int(tok))
        chat = llm.create_chat_completion(messages=item["messages"], temperature=0.0, top_k=1,
                                          max_tokens=job["max_new_tokens"], repeat_penalty=1.0)
        out.append({"tokenized": ids, "tokens": tokens, "chat_text": chat["choices"][0]["message"]["content"]})
    print("RESULT " + json.dumps(out))
""")


def llama_check(python: str, gguf: Path, hf_dir: Path, max_new_tokens: int, threads: int) -> dict:
    """Greedy tokens of the merged model (transformers) and of llama.cpp (the GGUF) from the same prompt ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.generation import GenerationSettings, encode_prompt, generate

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, n=1, batch_size=1)
    reference = generate(model, tokenizer, conversations, settings)
    items = [{"messages": c, "ids": encode_prompt(tokenizer, c, 1024),
              "text": tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)}
             for c in conversations]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"gguf": str(gguf), "prompts": items, "max_new_tokens": max_new_tokens, "threads": threads}, f)
    proc = subprocess.run([python, "-c", _LLAMA_SCRIPT, f.name], capture_output=True, text=True)
    os.unlink(f.name)
    result_line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if result_line is None:
        return {"ran": False, "error": proc.stderr.strip()[-1500:]}
    got = json.loads(result_line[len("RESULT "):])
    eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
              else [model.generation_config.eos_token_id])
    rows = []
    for item, ref, llama in zip(items, reference, got):
        ours = [t for t in ref.token_ids if t not in eos]
        parted = next((i for i, (a, b) in enumerate(zip(ours, llama["tokens"])) if a != b),
                      None if len(ours) == len(llama["tokens"]) else min(len(ours), len(llama["tokens"])))
        rows.append({"same_tokens": parted is None, "first_difference": parted, "tokens": len(ours),
                     "same_prompt_ids": llama["tokenized"] == item["ids"],
                     "same_chat_text": llama["chat_text"].strip() == ref.text.strip(),
                     "merged_text": ref.text, "llama_text": llama["chat_text"]})
    loaded = [ln for ln in proc.stderr.splitlines() if "print_info: file type" in ln or "print_info: arch" in ln
              or "model type" in ln or "n_vocab" in ln or "chat template" in ln.lower()][:8]
    return {"ran": True, "prompts": rows, "llama_log": loaded,
            "same_tokens": sum(r["same_tokens"] for r in rows), "same_prompt_ids": sum(r["same_prompt_ids"] for r in rows),
            "same_chat_text": sum(r["same_chat_text"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="SFT steps on the bundled SmolLM2 (default 4)")
    ap.add_argument("--adapter", help="export this adapter instead of training one")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="greedy tokens per prompt in the llama.cpp check")
    ap.add_argument("--llama-python", help="a Python that has llama-cpp-python (default: .venv-llama/, built once)")
    ap.add_argument("--no-install", action="store_true", help="never build llama-cpp-python")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--json", action="store_true", help="also print every figure as one JSON line")
    args = ap.parse_args(argv)
    threads = os.cpu_count() or 1

    from bench.machine import describe

    workdir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    report: dict = {"machine": describe()}
    try:
        adapter = args.adapter or train(workdir, args.steps)
        for fmt in ("hf", "gguf"):
            r = _cli("export-model", adapter, str(workdir / fmt), "--format", fmt)
            report[fmt] = {"wall_s": r["wall_s"], "peak_mem_mb": r["peak_mem_mb"], "size_mb": r["size_mb"],
                           "checks": r["checks"]}
        python, how = llama_python(args)
        report["llama_cpp"] = {"how": how}
        if python is not None:
            report["llama_cpp"].update(llama_check(python, workdir / "gguf" / "model.gguf", workdir / "hf",
                                                   args.max_new_tokens, threads))
    finally:
        if args.keep:
            print(f"scratch folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(report["machine"])
    for fmt in ("hf", "gguf"):
        r = report[fmt]
        print(f"export {fmt:<5} wall {r['wall_s']:6.1f} s  peak {r['peak_mem_mb']:7.0f} MB  size {r['size_mb']:7.1f} MB  "
              f"checks {json.dumps(r['checks'])}")
    llama = report["llama_cpp"]
    print(f"llama.cpp: {llama['how']}")
    if llama.get("ran"):
        n = len(PROMPTS)
        print(f"  greedy tokens equal to the merged model's: {llama['same_tokens']}/{n} prompts; prompt ids equal: "
              f"{llama['same_prompt_ids']}/{n}; chat-template text equal: {llama['same_chat_text']}/{n}")
        for i, row in enumerate(llama["prompts"]):
            mark = "same" if row["same_tokens"] else f"parts at token {row['first_difference'] + 1}"
            print(f"  {i + 1}. {mark:<20} {row['llama_text'][:90]!r}")
        for line in llama["llama_log"]:
            print(f"  | {line.strip()[:120]}")
    elif "error" in llama:
        print(f"  llama.cpp did not run: {llama['error'][-600:]}")
    else:
        print("  not run; the transformers read-back of the export's own check stands")
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
