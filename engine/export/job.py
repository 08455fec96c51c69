"""The ``export`` job: a trained adapter merged into its base and written as ``hf``, ``gguf`` or ``ollama``, checked,
and only then moved to OUT.

Steps (each a progress event; cancel is honoured between them):

1. inspect: the adapter, the base (refused when it cannot be found), the kind of model, the tokenizer and its chat
   template; for GGUF the architecture and tokenizer are checked against what the writer covers, and for Ollama the
   Modelfile is derived, all before any weights load;
2. load the base unquantised in float32 with the adapter (and its head);
3. reference: base + adapter's greedy generations on the check prompts (a classifier: its scores);
4. merge the adapter into the base (a classifier: into a transformers sequence classifier);
5. write into a build folder beside OUT (``workbench.model_export.build_dir``);
6. check: the hf folder is loaded back and must generate the same tokens (score the same); a GGUF is read back
   through transformers: same tokens from its tokenizer and template, next-token logits within the tolerance of the
   merged model's (whose greedy generations must equal base + adapter's);
7. the model card, then the build folder is renamed to OUT.

Any failure, a failed check included, removes the build folder: OUT is never left half-written.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from workbench.configs import ExportConfig
from workbench.model_export import build_dir

from ..chat_templates import TEMPLATE_FILE
from ..devices import resolve_device
from ..jobs import JobError, JobResult
from ..jobs.context import JobContext
from . import checks
from .card import model_card, run_facts
from .gguf_file import apply_rope_factors, estimated_size, gguf_architecture, read_rope_factors, write_gguf
from .gguf_vocab import gguf_vocab
from .merge import HEADED_ADAPTER, classifier, export_tokenizer, load_base, merge, with_adapter, with_head
from .ollama import MODELFILE, modelfile
from .output import check_free_space, folder_size, is_disk_full, move_into_place, write_error, write_text
from .source import CAUSAL_LM, ExportSource, base_dtype, inspect_source

GGUF_FILE = "model.gguf"
DEFAULT_TOLERANCE = {"f16": 0.01, "q8_0": 0.05}
_STEPS = 7
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class _Cancelled(Exception):
    pass


class _Progress:
    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.step = 0

    def __call__(self, phase: str) -> None:
        if self.ctx.should_stop():
            raise _Cancelled()
        self.step += 1
        self.ctx.log(phase)
        self.ctx.progress(self.step, _STEPS, phase=phase)


def run(ctx: JobContext) -> JobResult:
    cfg: ExportConfig = ctx.config  # type: ignore[assignment]
    out = Path(cfg.output).expanduser().resolve()
    build = build_dir(out, os.getpid())
    started = time.perf_counter()
    try:
        summary = _export(ctx, cfg, out, build, _Progress(ctx))
    except _Cancelled:
        ctx.log("export cancelled; nothing was written to OUT")
        return JobResult("cancelled", None, {}, {})
    finally:
        shutil.rmtree(build, ignore_errors=True)
    summary["export_s"] = round(time.perf_counter() - started, 2)
    return JobResult("done", str(out), {}, summary)


def _export(ctx: JobContext, cfg: ExportConfig, out: Path, build: Path, step: _Progress) -> dict[str, Any]:
    step("checking the adapter, its base and the output")
    if out.is_dir() and any(out.iterdir()):
        raise JobError(f"{out}: exists and is not empty; the export never overwrites")
    source = inspect_source(cfg.adapter, cfg.base_model, trust_remote_code=cfg.trust_remote_code)
    if cfg.format != "hf" and source.kind != CAUSAL_LM:
        raise JobError(f"{source.adapter} is a {source.kind.replace('-', ' ')}: it exports as a sequence classifier "
                       "with --format hf (llama.cpp and Ollama run language models)")
    tokenizer = export_tokenizer(source, cfg.chat_template)
    if cfg.chat_template:
        template_source = f"the export's setting chat_template ({cfg.chat_template})"
    elif (source.adapter / TEMPLATE_FILE).is_file():
        template_source = "the template the run trained with (saved with its adapter)"
    else:
        template_source = "the base model's own template"
    from transformers import AutoConfig

    base_config = AutoConfig.from_pretrained(source.base_path, trust_remote_code=cfg.trust_remote_code)
    vocab = modelfile_text = None
    if cfg.format in ("gguf", "ollama"):
        gguf_architecture(base_config)
        vocab = gguf_vocab(tokenizer, base_config.vocab_size)
        if cfg.format == "ollama":
            modelfile_text = modelfile(GGUF_FILE, vocab.chat_template, bos_token=tokenizer.bos_token,
                                       eos_token=tokenizer.eos_token, add_bos=vocab.add_bos)
    conversations, prompts_from = checks.check_conversations(source.project_run, cfg.check_prompts,
                                                             with_answers=source.kind != CAUSAL_LM)
    ctx.log(f"checking on {prompts_from}")
    build.mkdir()

    step("loading the base in full precision with the adapter")
    device = resolve_device(cfg.device)
    facts = run_facts(source)
    if source.kind == CAUSAL_LM:
        figures, files, extra = _causal(ctx, cfg, source, tokenizer, conversations, vocab, modelfile_text, build, out,
                                        step, device, facts)
    else:
        figures, files, extra = _classifier(cfg, source, tokenizer, conversations, build, out, step, device)
    figures = {"checked_on": prompts_from, **figures}
    files = sorted({*files, "README.md"})

    step("writing the model card and moving the export into place")
    card = model_card(source, facts, fmt=cfg.format, quant=cfg.quant if cfg.format != "hf" else None,
                      dtype=extra.get("dtype"), template_source=template_source, checks=figures, files=files,
                      score_bias=extra.get("score_bias"))
    try:
        write_text(build / "README.md", card)
        if out.is_dir() and any(out.iterdir()):
            raise JobError(f"{out}: something was written there while the export ran; the export was not kept")
        size = folder_size(build)
        move_into_place(build, out)
    except OSError as e:
        raise write_error(e, out) from e
    ctx.log(f"exported to {out} ({size / 2**20:,.1f} MB), checks passed")
    return {"format": cfg.format, "kind": source.kind, "base_model": source.base_ref, "files": sorted(files),
            "size_mb": round(size / 2**20, 2), "checks": figures, **{k: v for k, v in extra.items() if v is not None},
            **({"quant": cfg.quant} if cfg.format != "hf" else {})}


def _save_safetensors(model: Any, tokenizer: Any, cfg: ExportConfig, source: ExportSource, build: Path, out: Path,
                      step: _Progress) -> str:
    """The hf format's files at the chosen precision (the base's own by default); returns that precision."""
    dtype = base_dtype(source) if cfg.dtype == "auto" else cfg.dtype
    check_free_space(build, sum(p.numel() for p in model.parameters()) * _BYTES[dtype], out)
    step(f"writing safetensors ({dtype})")
    try:
        model.to(getattr(torch, dtype)).save_pretrained(build, safe_serialization=True)
        tokenizer.save_pretrained(build)
    except Exception as e:  # noqa: BLE001 - safetensors reports a full disk as its own error type
        if isinstance(e, OSError) or is_disk_full(e):
            raise write_error(e, out) from e
        raise
    return dtype


def _causal(ctx: JobContext, cfg: ExportConfig, source: ExportSource, tokenizer: Any, conversations: list,
            vocab: Any, modelfile_text: str | None, build: Path, out: Path, step: _Progress, device: torch.device,
            facts: dict[str, Any]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = with_adapter(load_base(source, tokenizer, device, trust_remote_code=cfg.trust_remote_code), source)
    step("generating greedily with base + adapter (the reference)")
    reference = checks.greedy_tokens(model, tokenizer, conversations, cfg.check_tokens)
    step("merging the adapter into the base")
    merged = merge(model)  # in place: the same modules, without the adapter layers
    del model
    if cfg.format == "hf":
        gen = merged.generation_config
        gen.eos_token_id = gen.eos_token_id if gen.eos_token_id is not None else tokenizer.eos_token_id
        gen.pad_token_id = gen.pad_token_id if gen.pad_token_id is not None else tokenizer.pad_token_id
        dtype = _save_safetensors(merged, tokenizer, cfg, source, build, out, step)
        del merged
        gc.collect()
        step("checking: the saved model generates as base + adapter did")
        saved = AutoModelForCausalLM.from_pretrained(build, dtype=torch.float32).to(device)
        saved_tokenizer = AutoTokenizer.from_pretrained(build)
        if saved_tokenizer.chat_template != tokenizer.chat_template:
            raise JobError("check failed: the saved tokenizer lost the chat template; the export was not kept",
                           kind="check")
        figures = checks.compare_greedy(reference, checks.greedy_tokens(saved, tokenizer, conversations,
                                                                        cfg.check_tokens), "the saved model")
        files = sorted(p.name for p in build.iterdir())
        return figures, files, {"dtype": dtype}

    figures = checks.compare_greedy(reference, checks.greedy_tokens(merged, tokenizer, conversations,
                                                                    cfg.check_tokens), "the merged model")
    ids = checks.prompt_ids(tokenizer, conversations)
    merged_logits = checks.next_token_logits(merged, ids)
    check_free_space(build, estimated_size(merged, cfg.quant), out)
    step(f"writing {GGUF_FILE} ({cfg.quant})" + (" and the Modelfile" if modelfile_text else ""))
    name = facts["name"] or (f"{facts['stage']} run {facts['run_id']}" if facts["run_id"] else source.adapter.parent.name)

    def tensor_written(done: int, total: int) -> None:
        if ctx.should_stop():
            raise _Cancelled()

    try:
        written = write_gguf(build / GGUF_FILE, merged, vocab, cfg.quant, name=name, on_tensor=tensor_written)
        if modelfile_text is not None:
            write_text(build / MODELFILE, modelfile_text)
    except OSError as e:
        raise write_error(e, out) from e
    del merged
    gc.collect()
    step("checking: the GGUF read back through transformers")
    gguf_model = AutoModelForCausalLM.from_pretrained(build, gguf_file=GGUF_FILE, dtype=torch.float32).to(device)
    factors = read_rope_factors(build / GGUF_FILE)
    if factors is not None:
        apply_rope_factors(gguf_model, factors)
    gguf_tokenizer = AutoTokenizer.from_pretrained(build, gguf_file=GGUF_FILE)
    figures.update(checks.compare_tokenizers(tokenizer, gguf_tokenizer, conversations))
    tolerance = cfg.logit_tolerance if cfg.logit_tolerance is not None else DEFAULT_TOLERANCE[cfg.quant]
    figures.update(checks.compare_logits(merged_logits, checks.next_token_logits(gguf_model, ids), tolerance))
    files = sorted(p.name for p in build.iterdir())
    return figures, files, {"gguf": written}


def _classifier(cfg: ExportConfig, source: ExportSource, tokenizer: Any, conversations: list, build: Path, out: Path,
                step: _Progress, device: torch.device) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    from transformers import AutoModelForSequenceClassification

    hm = with_head(load_base(source, tokenizer, device, trust_remote_code=cfg.trust_remote_code), source)
    step("scoring with base + adapter + head (the reference)")
    input_ids, mask = checks.padded(checks.conversation_ids(tokenizer, conversations), tokenizer.pad_token_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    with torch.inference_mode():
        reference = hm.score(HEADED_ADAPTER, input_ids, mask).float().cpu()
    step("merging the adapter into the base, the head as the classifier's score layer")
    model, score_bias = classifier(hm, source, tokenizer.pad_token_id)
    del hm
    dtype = _save_safetensors(model, tokenizer, cfg, source, build, out, step)
    del model
    gc.collect()
    step("checking: the saved classifier scores as base + adapter + head did")
    saved = AutoModelForSequenceClassification.from_pretrained(build, dtype=torch.float32).to(device)
    with torch.inference_mode():
        logits = saved(input_ids=input_ids, attention_mask=mask).logits.float().cpu()
    if score_bias is not None:
        logits = logits + torch.tensor(score_bias)
    figures = checks.compare_scores(reference, logits)
    files = sorted(p.name for p in build.iterdir())
    return figures, files, {"dtype": dtype, "score_bias": score_bias, "labels": source.labels or None}
