"""The model card (README.md) written into every export: the base, the data snapshot, the run's settings and final
metrics, the chat template, how the export was made and checked, and how to use it.

The run's facts come from its project when the adapter is a project run's output (the run row's final metrics and
stage, the snapshot's content hash), else from the model card and ``config.yaml`` the trainer wrote beside the
adapter.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .source import CAUSAL_LM, REWARD_MODEL, ExportSource


def run_facts(source: ExportSource) -> dict[str, Any]:
    """Stage, run id, name, snapshot (id, content hash) and final metrics of the run the adapter came from."""
    facts: dict[str, Any] = {"stage": source.stage, "run_id": None, "name": source.run_config.get("name") or "",
                             "snapshot_id": source.run_config.get("snapshot_id"), "content_hash": None,
                             "metrics": {}, "project": None}
    if source.project_run is not None:
        from workbench.errors import WorkbenchError
        from workbench.store import Project

        project_path, run_id = source.project_run
        try:
            with Project.open(project_path, migrate=False) as project:
                run = project.get_run(run_id)
                snapshots = {s["id"]: s for s in project.snapshots()}
        except WorkbenchError:
            run, snapshots = None, {}
        if run is not None:
            facts.update(stage=run["stage"], run_id=run_id, name=run.get("name") or facts["name"],
                         project=project_path.name, metrics=run.get("final_metrics") or {})
            snap_id = run.get("snapshot_id") or facts["snapshot_id"]
            facts["snapshot_id"] = snap_id
            if snap_id in snapshots:
                facts["content_hash"] = snapshots[snap_id]["content_hash"]
    if facts["content_hash"] is None:
        match = re.search(r"content hash `([^`]+)`", source.readme)
        facts["content_hash"] = match.group(1) if match else None
    if not facts["metrics"]:
        facts["metrics"] = _card_metrics(source.readme)
    return facts


def _card_metrics(readme: str) -> dict[str, float]:
    """The "## Final metrics" list of a run's model card."""
    section = re.search(r"^## Final metrics\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    metrics = {}
    for line in (section.group(1) if section else "").splitlines():
        m = re.match(r"- ([^:]+): (\S+)$", line.strip())
        if m:
            try:
                metrics[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return metrics


def _usage(fmt: str, kind: str, files: list[str], score_bias: list[float] | None) -> list[str]:
    gguf = next((f for f in files if f.endswith(".gguf")), "model.gguf")
    if fmt == "gguf":
        return ["```sh", f"llama-cli -m {gguf} --jinja -cnv", "```"]
    if fmt == "ollama":
        return ["```sh", "ollama create my-model -f Modelfile", "ollama run my-model", "```"]
    if kind == CAUSAL_LM:
        return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "tokenizer = AutoTokenizer.from_pretrained('path/to/this/folder')",
                "model = AutoModelForCausalLM.from_pretrained('path/to/this/folder')", "```"]
    lines = ["```python", "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
             "tokenizer = AutoTokenizer.from_pretrained('path/to/this/folder')",
             "model = AutoModelForSequenceClassification.from_pretrained('path/to/this/folder')",
             "text = tokenizer.apply_chat_template(conversation, tokenize=False)  # the answer included",
             "ids = tokenizer(text, add_special_tokens=False, return_tensors='pt')",
             "logits = model(**ids).logits[0]"]
    if score_bias is not None:
        lines.append("logits = logits + torch.tensor(model.config.score_bias)  # the head's bias, see above")
    if kind != REWARD_MODEL:
        lines.append("flagged = logits.sigmoid() > 0.5  # one probability per category")
    return lines + ["```"]


def model_card(source: ExportSource, facts: dict[str, Any], *, fmt: str, quant: str | None, dtype: str | None,
               template_source: str, checks: dict[str, Any], files: list[str],
               score_bias: list[float] | None = None) -> str:
    what = {CAUSAL_LM: "a language model", REWARD_MODEL: "a reward model (a sequence classifier with one score)"}.get(
        source.kind, f"a safety classifier (a sequence classifier with one logit per category: {', '.join(source.labels)})")
    title = f"{(facts['stage'] or 'LoRA').upper()} model" + (f" — run {facts['run_id']}" if facts["run_id"] else "") + (
        f" ({facts['name']})" if facts["name"] else "")
    tags = ["rlhf-workbench", facts["stage"] or "lora", {"hf": "safetensors"}.get(fmt, fmt)]
    library = "transformers" if fmt == "hf" else "gguf"
    made = {"hf": f"merged weights as safetensors ({dtype})", "gguf": f"one GGUF file ({quant}) for llama.cpp",
            "ollama": f"a GGUF file ({quant}) and an Ollama Modelfile"}[fmt]
    lines = [
        "---", f"base_model: {source.base_ref}", f"library_name: {library}", f"tags: [{', '.join(tags)}]", "---", "",
        f"# {title}", "",
        f"{what[0].upper() + what[1:]}, trained in RLHF Workbench as a LoRA adapter and exported here with the adapter "
        f"merged into its base in full precision: {made}.", "",
        "## Base model", "", f"`{source.base_ref}`", "",
        "## Data", "",
        (f"Snapshot {facts['snapshot_id']}" if facts["snapshot_id"] is not None else "Snapshot not recorded")
        + (f", content hash `{facts['content_hash']}`" if facts["content_hash"] else "")
        + (f", of the project {facts['project']}" if facts["project"] else "") + ".", "",
        "## Final metrics of the run", "",
        *([f"- {k}: {v:.6g}" for k, v in sorted(facts["metrics"].items()) if isinstance(v, (int, float))]
          or ["(none recorded)"]), "",
        "## Chat template", "", f"From {template_source}; it is saved with the tokenizer"
        + (" and in the GGUF's `tokenizer.chat_template`" if fmt != "hf" else "") + ".", "",
    ]
    if score_bias is not None:
        lines += ["## Score bias", "",
                  "The trained head has a bias, which the `score` layer of transformers' sequence classifiers cannot "
                  f"hold; it is in `config.json` as `score_bias` ({', '.join(f'{b:.6g}' for b in score_bias)}): add it "
                  "to the logits to get the classifier's own scores.", ""]
    lines += ["## Checks passed before this export was kept", "",
              *[f"- {k}: {v}" for k, v in checks.items()], "",
              "## Run settings", "", "```yaml",
              yaml.safe_dump(source.run_config, sort_keys=False, allow_unicode=True).rstrip() or "{}", "```", "",
              "## Use", "", *_usage(fmt, source.kind, files, score_bias), ""]
    return "\n".join(lines)
