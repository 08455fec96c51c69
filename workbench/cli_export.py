"""``workbench export-model ADAPTER_DIR OUT --format hf|gguf|ollama [--quant f16|q8_0]``: a trained adapter merged
into its base, written for use outside the app, and verified before it is kept.

Like the train commands: a progress bar on stderr while the export worker runs, then one JSON line on stdout with
``status`` (done, failed or cancelled), ``output`` (OUT, or null), ``format``, ``kind`` (causal-lm, reward-model or
safety-classifier), ``files``, ``size_mb``, ``checks`` (the figures of the checks it passed: greedy prompts and tokens
matched, the GGUF's largest logit difference, a classifier's score difference), ``wall_s``, ``peak_mem_mb``, and
``error`` when it failed. Exit code 0 when the export is done, 1 when it failed (nothing is left at OUT), 130 when
it was cancelled; a request refused before the export starts (no such adapter, pickled files, OUT not empty) exits
with 1 too, after the same JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .cli_train import follow
from .configs import EXPORT_FORMATS, GGUF_QUANTS, ExportConfig
from .errors import WorkbenchError
from .jobs import RunHandle
from .model_export import start_export

SUMMARY_KEYS = ("format", "quant", "kind", "base_model", "files", "size_mb", "checks", "dtype", "score_bias", "labels",
                "peak_mem_mb")


def export_summary(handle: RunHandle | None, config: ExportConfig, *, error: str | None = None) -> dict[str, Any]:
    final = (handle.final or {}) if handle is not None else {}
    inner = final.get("summary") or {}
    out: dict[str, Any] = {
        "status": (handle.status or "failed") if handle is not None else "failed",
        "output": final.get("output"),
        "format": config.format,
    }
    for key in SUMMARY_KEYS:
        if key in inner:
            out[key] = inner[key]
    err = error or (handle.error if handle is not None else None)
    if err:
        out["error"] = err
    return out


def run_export(args: argparse.Namespace) -> int:
    config = ExportConfig(adapter=args.adapter, output=args.out, format=args.format, quant=args.quant,
                          base_model=args.base or "", chat_template=args.chat_template, device=args.device or "auto",
                          dtype=args.dtype or "auto", check_prompts=args.check_prompts or 8,
                          # headless there is no window to keep a core free for (as the train commands)
                          num_threads=args.threads or os.cpu_count() or 1)
    started = time.time()
    try:
        handle = start_export(config)
    except WorkbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps(export_summary(None, config, error=str(e)), ensure_ascii=False))
        return 1
    follow(handle, quiet=args.quiet)
    result = export_summary(handle, config)
    result["wall_s"] = round(time.time() - started, 2)
    if result["status"] != "done" and result.get("error"):
        print(f"export {result['status']}: {result['error']}", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False, default=str))
    return {"done": 0, "cancelled": 130}.get(result["status"], 1)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-model", help="merge a trained adapter into its base and write it as hf, gguf or "
                                                   "ollama, verified before it is kept")
    p.add_argument("adapter", metavar="ADAPTER_DIR", help="the adapter folder (a run's RUN/adapter)")
    p.add_argument("out", metavar="OUT", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="hf (merged safetensors), gguf (llama.cpp) "
                                                                           "or ollama (GGUF + Modelfile)")
    p.add_argument("--quant", choices=GGUF_QUANTS, default="f16", help="GGUF tensor type (default f16)")
    p.add_argument("--base", metavar="MODEL", help="the base to merge into (default: the one the run recorded)")
    p.add_argument("--chat-template", metavar="NAME|FILE", help="a chat template to write instead of the adapter's "
                                                                "(chatml, llama3, gemma or a Jinja file)")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"),
                   help="precision of the hf format's weights (default: the base's own)")
    p.add_argument("--check-prompts", type=int, metavar="N", help="prompts the export is checked on (default 8)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default here: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; only the JSON summary")
    p.set_defaults(func=run_export)
