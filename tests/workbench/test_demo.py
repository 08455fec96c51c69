"""The demo project: built from resources/demo/demo.jsonl on first run, left alone afterwards, bad data refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from workbench.demo import DEMO_FILE, default_demo_path, ensure_demo_project, load_demo_records
from workbench.errors import InputError, WorkbenchError
from workbench.paths import BUNDLED_MODEL_REF
from workbench.store import Project


def test_demo_data_covers_what_the_demo_promises():
    records = load_demo_records()
    assert len(records) >= 40
    tags = [set(r["tags"]) for r in records]
    assert sum("red-team" in t for t in tags) >= 3
    assert sum("benign-risky" in t for t in tags) >= 3
    assert any("multi-turn" in t for t in tags) and any(len(r["messages"]) > 1 for r in records)
    languages = {t for ts in tags for t in ts if t.startswith("lang:")}
    assert languages & {"lang:ar", "lang:he"}, "a right-to-left language"
    assert languages & {"lang:zh", "lang:ja"}, "a CJK language"
    assert len(languages) >= 5
    heldout = sum(r["split"] == "heldout" for r in records)
    assert 0.15 <= heldout / len(records) <= 0.3
    for r in records:
        assert len({resp["content"] for resp in r["responses"]}) >= 2, r["id"]
        for resp in r["responses"]:
            assert resp["content"].strip()
            assert resp["model"] == BUNDLED_MODEL_REF
            assert isinstance(resp["seed"], int)
            assert {"temperature", "top_p", "top_k", "max_new_tokens"} <= set(resp["sampling"])


def test_ensure_demo_project_creates_the_queue(tmp_path: Path):
    path = ensure_demo_project(tmp_path / "demo.wbp")
    assert path == tmp_path / "demo.wbp"
    records = load_demo_records()
    with Project.open(path) as p:
        stats = p.stats()
        assert stats["prompts"] == len(records) >= 40
        assert stats["heldout_prompts"] == sum(r["split"] == "heldout" for r in records)
        assert stats["judged"] == 0
        expected_pairs = 0
        for pid in p.prompt_ids():
            responses = p.responses_for(pid)
            assert len(responses) >= 2
            assert all(r.origin == "model" and r.model == BUNDLED_MODEL_REF and r.sampling for r in responses)
            assert all(r.seed is not None for r in responses)
            expected_pairs += len(responses) * (len(responses) - 1) // 2
        assert stats["pending"] == stats["comparisons"] == expected_pairs
        first = p.next_pending()
        assert first is not None and first.source == "demo"
        red = p.prompt_ids(tag="red-team")
        assert red and all("red-team" in p.get_prompt(i).tags for i in red)
    assert not list(tmp_path.glob(".demo.wbp.tmp*"))


def test_existing_project_is_left_alone(tmp_path: Path):
    path = ensure_demo_project(tmp_path / "demo.wbp")
    with Project.open(path) as p:
        c = p.next_pending()
        p.judge(c.id, "a", strength="clear")
    again = ensure_demo_project(path)
    assert again == path
    with Project.open(path) as p:
        assert p.stats()["judged"] == 1


def test_default_location_follows_data_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RLHF_WORKBENCH_DATA", str(tmp_path / "data"))
    assert default_demo_path() == tmp_path / "data" / "demo.wbp"
    assert ensure_demo_project() == tmp_path / "data" / "demo.wbp"
    assert (tmp_path / "data" / "demo.wbp").is_file()


def test_a_non_project_file_in_the_way_is_refused(tmp_path: Path):
    path = tmp_path / "demo.wbp"
    path.write_text("my notes")
    with pytest.raises(WorkbenchError, match="not an RLHF Workbench project"):
        ensure_demo_project(path)
    assert path.read_text() == "my notes"


def test_bad_demo_data_names_line_and_field(tmp_path: Path):
    good = DEMO_FILE.read_text(encoding="utf-8").splitlines()
    bad_record = json.loads(good[1])
    bad_record["messages"][0]["role"] = "robot"
    data = tmp_path / "demo.jsonl"
    data.write_text("\n".join([good[0], json.dumps(bad_record), *good[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        ensure_demo_project(tmp_path / "demo.wbp", data_file=data)
    assert e.value.line == 2 and e.value.field == "messages[0].role"
    assert str(data) in str(e.value)
    assert not (tmp_path / "demo.wbp").exists() and not list(tmp_path.glob("*.wbp*"))
    data.write_text(good[0] + "\n{oops\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        load_demo_records(data)


def test_demo_module_does_not_import_torch():
    import subprocess

    code = "import sys, workbench.demo; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
