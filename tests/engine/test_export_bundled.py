"""The bundled SmolLM2: two steps of SFT on a tiny project, exported as GGUF f16 through the CLI, read back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.engine.sft_helpers import add_demonstrations
from workbench.paths import BUNDLED_MODEL_REF
from workbench.store import Project


@pytest.mark.slow
def test_smollm2_sft_run_exports_to_gguf_and_reads_back(project_path, tmp_path):
    from gguf import GGUFReader
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.models import load_model

    with Project.create(project_path) as p:
        add_demonstrations(p, 6)
    train = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "train", "sft", str(project_path), "--max-steps", "2", "--batch-size",
         "2", "--lora-r", "4", "--lr", "1e-3", "--max-length", "128", "--quiet"],
        capture_output=True, text=True, timeout=1200,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    adapter = json.loads(train.stdout.strip().splitlines()[-1])["output"]
    out = tmp_path / "smollm2-gguf"
    export = subprocess.run([sys.executable, "-m", "workbench.cli", "export-model", adapter, str(out), "--format",
                             "gguf", "--quiet"], capture_output=True, text=True, timeout=1200)
    assert export.returncode == 0, export.stderr[-2000:]
    summary = json.loads(export.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["base_model"] == BUNDLED_MODEL_REF
    checks = summary["checks"]
    assert checks["greedy_match"] and checks["greedy_prompts"] == 8 and checks["tokenizer_match"]
    assert checks["logit_max_diff_frac"] < 0.01

    reader = GGUFReader(str(out / "model.gguf"))
    assert len(reader.tensors) == 2 + 30 * 9  # embedding, final norm, 9 tensors per block; the output is tied
    assert bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "gpt-2"
    # read back independently: the next-token logits of the GGUF against base + adapter, unmerged
    lm = load_model(BUNDLED_MODEL_REF, device="cpu", dtype="float32", quantize="none")
    tuned = PeftModel.from_pretrained(lm.model, adapter).eval()
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32).eval()
    back_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
    assert back_tokenizer.chat_template == lm.tokenizer.chat_template
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "What do bees make?"}],
                                           add_generation_prompt=True, return_dict=False)
    assert back_tokenizer.apply_chat_template([{"role": "user", "content": "What do bees make?"}],
                                              add_generation_prompt=True, return_dict=False) == ids
    with torch.no_grad():
        ours = tuned(input_ids=torch.tensor([ids])).logits[0, -1]
        theirs = back(input_ids=torch.tensor([ids])).logits[0, -1]
    assert float((ours - theirs).abs().max() / ours.abs().max()) < 0.01
    assert int(ours.argmax()) == int(theirs.argmax())
