"""Bad input: one InputError naming the file, the line (or row / array index) and the field, and the project file
byte-for-byte unchanged."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.workbench.import_helpers import HH_FILES, fingerprint, hh, read_csv, read_jsonl, write_csv, write_jsonl
from workbench.errors import InputError
from workbench.importers import import_file
from workbench.paths import xstest_prompts_file
from workbench.store import Project


@pytest.fixture
def seeded(project_path: Path, tmp_path: Path) -> Path:
    """A closed project that already holds some data, so an unwanted write would show."""
    with Project.create(project_path) as p:
        import_file(p, write_jsonl(tmp_path / "seed.jsonl", [{"prompt": "seed", "chosen": "a", "rejected": "b"}]))
    return project_path


def refuse(project_path: Path, data: Path, fmt: str = "auto", **kw) -> InputError:
    """Import ``data`` expecting an InputError; check the project file did not change; return the error."""
    before = fingerprint(project_path)
    with Project.open(project_path) as p:
        with pytest.raises(InputError) as info:
            import_file(p, data, fmt, **kw)
    assert fingerprint(project_path) == before
    err = info.value
    assert str(data) in str(err)
    return err


def test_fingerprint_is_stable_when_nothing_is_written(seeded):
    before = fingerprint(seeded)
    with Project.open(seeded):
        pass
    assert fingerprint(seeded) == before


def test_malformed_json_line(seeded, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "chosen": "x", "rejected": "y"}\n\n{"prompt": "b", "chosen": \n', encoding="utf-8")
    err = refuse(seeded, path)
    assert err.line == 3 and "line 3" in str(err) and "malformed JSON" in str(err)


def test_malformed_line_at_the_end_of_a_real_file_writes_nothing(seeded, tmp_path, test_data):
    real = test_data / HH_FILES["harmless-base"]
    path = tmp_path / "hh.jsonl"
    with gzip.open(real, "rb") as f:
        path.write_bytes(f.read() + b'{"chosen": "\\n\\nHuman: x\\n\\nAssistant: y", "rejected": oops}\n')
    err = refuse(seeded, path)
    assert err.line == len(read_jsonl(real)) + 1
    with Project.open(seeded) as p:
        assert len(p.comparisons()) == 1


def test_missing_field(seeded, tmp_path):
    rows = [{"chosen": hh("a", "b"), "rejected": hh("a", "c")}, {"chosen": hh("a", "d")}]
    err = refuse(seeded, write_jsonl(tmp_path / "m.jsonl", rows))
    assert (err.line, err.field) == (2, "rejected")


def test_field_of_the_wrong_type(seeded, tmp_path):
    err = refuse(seeded, write_jsonl(tmp_path / "t.jsonl", [{"prompt": "p", "chosen": "a", "rejected": 5}]))
    assert err.line == 1 and err.field == "rejected"


def test_wrong_csv_columns(seeded, tmp_path):
    err = refuse(seeded, write_csv(tmp_path / "w.csv", ["prompt", "response"], [["a", "b"]]))
    assert err.line == 1 and err.field == "response" and "expected one of" in str(err)


def test_csv_row_with_missing_fields(seeded, tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("prompt,chosen,rejected\np,a,b\n\"multi\nline\",a,b\np2,a\n", encoding="utf-8")
    err = refuse(seeded, path)
    assert err.line == 4 and err.field == "rejected"  # rows counted with the header as row 1, not physical lines


def test_bad_role(seeded, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}]
    err = refuse(seeded, write_jsonl(tmp_path / "r.jsonl", rows))
    assert err.line == 1 and err.field == "messages[1].role" and "tool" in str(err)


def test_non_utf8_bytes(seeded, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    err = refuse(seeded, path)
    assert err.line == 2 and "UTF-8" in str(err)


def test_non_utf8_bytes_in_csv(seeded, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"prompt\nfine\ncaf\xe9\n")
    assert refuse(seeded, path).line == 3


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file(seeded, tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    assert "empty" in str(refuse(seeded, path))


def test_csv_with_only_a_header(seeded, tmp_path):
    assert "no records" in str(refuse(seeded, write_csv(tmp_path / "h.csv", ["prompt"], [])))


def test_message_over_the_cap(seeded, tmp_path):
    rows = [{"prompt": "p", "chosen": "short", "rejected": "x" * 101}]
    err = refuse(seeded, write_jsonl(tmp_path / "big.jsonl", rows), max_chars=100)
    assert err.line == 1 and err.field == "rejected" and "size cap" in str(err)


def test_nested_message_over_the_cap(seeded, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "y" * 50}]}]
    err = refuse(seeded, write_jsonl(tmp_path / "big.jsonl", rows), max_chars=20)
    assert err.field == "messages[1].content"


def test_ten_megabyte_record_is_refused_with_the_default_cap(seeded, tmp_path):
    rows = [{"prompt": "fine"}, {"prompt": "z" * (10 * 1024 * 1024)}]
    err = refuse(seeded, write_jsonl(tmp_path / "huge.jsonl", rows))
    assert err.line == 2 and err.field == "prompt"


def test_ten_megabyte_record_of_small_messages_is_refused(seeded, tmp_path):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "w" * (1024 * 1024)} for i in range(10)]
    err = refuse(seeded, write_jsonl(tmp_path / "many.jsonl", [{"messages": [*turns, {"role": "user", "content": "?"}]}]))
    assert err.line == 1 and err.field == "messages" and "record cap" in str(err)


def test_ten_megabyte_csv_field(seeded, tmp_path):
    err = refuse(seeded, write_csv(tmp_path / "huge.csv", ["prompt", "completion"], [["p", "c" * (10 * 1024 * 1024)]]))
    assert err.line == 2 and err.field == "completion"


def test_unknown_format_name(seeded, tmp_path):
    err = refuse(seeded, write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p"}]), "parquet")
    for name in ("hh-rlhf", "trl", "openai-chat", "xstest", "moderation", "mt-bench", "csv", "project"):
        assert name in str(err)


@pytest.mark.parametrize(
    ("fmt", "field"),
    [("xstest", None), ("moderation", "prompt"), ("openai-chat", "messages"), ("mt-bench", None), ("csv", None)],
)
def test_wrong_format_on_an_hh_file(seeded, test_data, fmt, field):
    err = refuse(seeded, test_data / HH_FILES["helpful-base"], fmt)
    assert err.field == field
    assert err.line in (1, None)


def test_hh_format_on_a_csv_file(seeded):
    err = refuse(seeded, xstest_prompts_file(), "hh-rlhf")
    assert (err.line, err.field) == (2, "chosen")


def test_hh_format_on_text_that_is_not_a_transcript(seeded, tmp_path):
    err = refuse(seeded, write_jsonl(tmp_path / "t.jsonl", [{"chosen": "plain", "rejected": "text"}]), "hh-rlhf")
    assert (err.line, err.field) == (1, "chosen") and "Human" in str(err)


def test_undetectable_keys(seeded, tmp_path):
    err = refuse(seeded, write_jsonl(tmp_path / "u.jsonl", [{"question": "q", "answer": "a"}]))
    assert err.line == 1 and "--format" in str(err)


def test_bad_moderation_label(seeded, tmp_path):
    err = refuse(seeded, write_jsonl(tmp_path / "mod.jsonl", [{"prompt": "x", "S": 0}, {"prompt": "y", "S": 2}]))
    assert (err.line, err.field) == (2, "S")


def test_kto_completion_labelled_both_ways(seeded, tmp_path):
    rows = [
        {"prompt": "q", "completion": "same answer", "label": True},
        {"prompt": "q", "completion": "another", "label": False},
        {"prompt": "q", "completion": "same answer", "label": False},
    ]
    err = refuse(seeded, write_jsonl(tmp_path / "kto.jsonl", rows))
    assert (err.line, err.field) == (3, "label")
    assert "labelled both desirable and undesirable (also on line 1)" in str(err)
    # The same in a CSV names rows.
    csv_path = write_csv(tmp_path / "kto.csv", ["prompt", "completion", "label"], [["q", "a", "false"], ["q", "a", "true"]])
    err = refuse(seeded, csv_path)
    assert (err.line, err.field) == (3, "label") and "(also on row 2)" in str(err)


def test_bad_margin(seeded, tmp_path):
    err = refuse(seeded, write_jsonl(tmp_path / "mg.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "big"}]))
    assert (err.line, err.field) == (1, "margin")


def test_bad_xstest_label(seeded, tmp_path, test_data):
    path = tmp_path / "xstest_v2_completions_fake.csv"
    shutil.copy(test_data / "xstest" / "model_completions" / "xstest_v2_completions_mistralinstruct.csv", path)
    rows = len(read_csv(path))
    text = path.read_text(encoding="utf-8").rstrip("\r\n") + "\r\nv2-999,homonyms,Hi?,Hello,x,y,TRUE,4_unknown\r\n"
    path.write_text(text, encoding="utf-8", newline="")
    err = refuse(seeded, path)
    # CSV rows are counted with the header as row 1, so the appended row is rows + 2 (a completion spans lines).
    assert (err.line, err.field) == (rows + 2, "final_label")


def test_json_array_index(seeded, tmp_path):
    path = tmp_path / "arr.json"
    path.write_text('[{"prompt": "a"}, {"prompt": "b"}, {"prompt": 7}]', encoding="utf-8")
    err = refuse(seeded, path)
    assert (err.line, err.field) == (2, "prompt")


def test_corrupt_gzip(seeded, tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "a"}\n' * 100)[:-20])
    assert "gzip" in str(refuse(seeded, path))


def test_missing_file(seeded, tmp_path):
    assert "no such file" in str(refuse(seeded, tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("writer", [
    lambda d: write_jsonl(d / "q.jsonl", [{"question_id": 1, "category": "x", "turns": []}]),
    lambda d: write_jsonl(d / "c.jsonl", [{"prompt": [{"role": "user", "content": "a"}], "chosen": "x", "rejected": "y"}]),
])
def test_more_structural_errors(seeded, tmp_path, writer: Callable[[Path], Path]):
    err = refuse(seeded, writer(tmp_path))
    assert err.line == 1 and err.field


def test_reference_answers_without_their_question_file(seeded, tmp_path, test_data):
    folder = tmp_path / "mt_bench" / "reference_answer"
    folder.mkdir(parents=True)
    path = folder / "gpt-4.jsonl"
    shutil.copy(test_data / "lmsys-fastchat-llm-judge" / "mt_bench" / "reference_answer" / "gpt-4.jsonl", path)
    err = refuse(seeded, path)
    assert err.line == 1 and "question.jsonl" in str(err)


def test_unpaired_surrogate_escape(seeded, tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"prompt": "fine \\ud83d\\ude00"}\n{"prompt": "broken \\ud83d here"}\n', encoding="utf-8")
    err = refuse(seeded, path)
    assert (err.line, err.field) == (2, "prompt")
