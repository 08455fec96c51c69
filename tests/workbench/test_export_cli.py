"""``workbench export-model``: progress and a JSON summary, and bad input (a base that cannot be found, pickled files,
an OUT that is not empty, a disk that fills up, an architecture the GGUF writer does not cover), each with one clear
message, a non-zero exit code and nothing left behind."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from workbench.cli import main
from workbench.configs import ExportConfig, SftConfig
from workbench.errors import InputError
from workbench.jobs import JobClient
from workbench.model_export import check_request, locate_run
from workbench.store import Project


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """(tiny base model folder, the adapter of an SFT run on it in a project)."""
    from engine.worker import run as run_worker
    from tests.engine.sft_helpers import add_demonstrations
    from tests.tiny_models import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("export-cli")
    base = build_tiny_causal_lm(root / "tiny")
    project = root / "p.wbp"
    with Project.create(project) as p:
        add_demonstrations(p, 6)
    _, run_dir = JobClient(project).prepare("sft", SftConfig(base_model=str(base), batch_size=2, lr=5e-3, max_steps=2,
                                                             checkpoint_every=0, eval_fraction=0.0, lora_r=2,
                                                             lora_alpha=4, max_length=96))
    assert run_worker(run_dir, stdout=io.StringIO(), own_process=False) == 0
    return base, run_dir / "adapter"


def cli(*args, env_extra=None, tmp=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    if tmp is not None:
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)  # where the export's job folder goes: it must be gone afterwards
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "export-model", *map(str, args), "--threads", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


def nothing_left(out) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def moved_adapter(adapter, dest, base_model):
    """A copy of the adapter whose run names another base."""
    copy = shutil.copytree(adapter, dest)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["base_model"] = str(base_model)
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    peft_config = json.loads((copy / "adapter_config.json").read_text())
    peft_config["base_model_name_or_path"] = str(base_model)
    (copy / "adapter_config.json").write_text(json.dumps(peft_config))
    return copy


def test_export_prints_progress_and_a_json_summary(sft_run, tmp_path):
    _, adapter = sft_run
    out = tmp_path / "exported"
    proc, summary = cli(adapter, out, "--format", "gguf", tmp=tmp_path / "tmp")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert summary["status"] == "done" and summary["output"] == str(out) and summary["format"] == "gguf"
    assert summary["quant"] == "f16" and summary["files"] == ["README.md", "model.gguf"]
    assert summary["checks"]["greedy_match"] and summary["checks"]["logit_max_diff_frac"] < 0.01
    assert summary["peak_mem_mb"] > 0 and summary["wall_s"] > 0
    assert "7/7" in proc.stderr and "checks passed" in proc.stderr
    assert not list((tmp_path / "tmp").iterdir())  # the job folder is gone
    assert locate_run(adapter) is not None and locate_run(out) is None


def test_a_base_that_cannot_be_found_is_refused(sft_run, tmp_path):
    _, adapter = sft_run
    lost = moved_adapter(adapter, tmp_path / "lost-adapter", tmp_path / "no-such-base")
    out = tmp_path / "out"
    proc, summary = cli(lost, out, "--format", "hf", tmp=tmp_path / "tmp")
    assert proc.returncode == 1 and summary["status"] == "failed" and summary["output"] is None
    assert "cannot be used" in summary["error"] and "no such file or folder" in summary["error"]
    assert "--base" in summary["error"] and str(tmp_path / "no-such-base") in summary["error"]
    assert nothing_left(out) and not list((tmp_path / "tmp").iterdir())


def test_pickled_files_and_a_non_empty_out_are_refused_before_anything_runs(sft_run, tmp_path, capsys):
    _, adapter = sft_run
    pickled = shutil.copytree(adapter, tmp_path / "pickled")
    (pickled / "old").mkdir()
    (pickled / "old" / "optimizer.pt").write_bytes(b"\x80\x04not really")
    code = main(["export-model", str(pickled), str(tmp_path / "a"), "--format", "hf"])
    out = capsys.readouterr()
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert code == 1 and summary["status"] == "failed" and "old/optimizer.pt" in summary["error"]
    assert "pickled" in out.err and nothing_left(tmp_path / "a")

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    code = main(["export-model", str(adapter), str(full), "--format", "gguf"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and "exists and is not empty" in summary["error"]
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def test_a_disk_that_fills_during_the_write_leaves_nothing(sft_run, tmp_path):
    _, adapter = sft_run
    out = tmp_path / "out"
    # the test hook: writes fail with ENOSPC after 50 kB, part way through the GGUF's tensors
    proc, summary = cli(adapter, out, "--format", "ollama",
                        env_extra={"RLHF_WORKBENCH_EXPORT_WRITE_LIMIT": "50000"}, tmp=tmp_path / "tmp")
    assert proc.returncode == 1 and summary["status"] == "failed"
    assert "disk filled up" in summary["error"] and str(out) in summary["error"]
    assert nothing_left(out) and not list((tmp_path / "tmp").iterdir())


def test_an_architecture_the_gguf_writer_does_not_cover_is_refused(sft_run, tmp_path):
    base, adapter = sft_run
    mistral = shutil.copytree(base, tmp_path / "tiny-mistral")
    config = json.loads((mistral / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (mistral / "config.json").write_text(json.dumps(config))
    other = moved_adapter(adapter, tmp_path / "mistral-adapter", mistral)
    out = tmp_path / "out"
    proc, summary = cli(other, out, "--format", "gguf")
    assert proc.returncode == 1
    assert "covers the llama and qwen2 architectures; this model is 'mistral'" in summary["error"]
    assert "--format hf" in summary["error"] and nothing_left(out)


def test_requests_are_checked_with_the_path_named(sft_run, tmp_path):
    _, adapter = sft_run
    with pytest.raises(InputError, match="no such adapter folder"):
        check_request(ExportConfig(adapter=str(tmp_path / "nope"), output=str(tmp_path / "o")))
    with pytest.raises(InputError, match=r"the run's adapter is .*adapter"):
        check_request(ExportConfig(adapter=str(adapter.parent), output=str(tmp_path / "o")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_request(ExportConfig(adapter=str(adapter), output=str(tmp_path / "file")))
    with pytest.raises(InputError, match="does not exist"):
        check_request(ExportConfig(adapter=str(adapter), output=str(tmp_path / "missing" / "o")))
    with pytest.raises(InputError, match="format"):
        check_request(ExportConfig(adapter=str(adapter), output=str(tmp_path / "o"), format="onnx"))
    (tmp_path / "empty").mkdir()
    check_request(ExportConfig(adapter=str(adapter), output=str(tmp_path / "empty")))  # an empty OUT is fine
