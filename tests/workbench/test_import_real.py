"""Importing every real file under ../shared/data/real gives the record counts its README documents, minus what
the importer reports as skipped (with the reason); re-importing adds nothing and counts the duplicates."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.workbench.import_helpers import HH_FILES, count
from workbench.importers import import_file
from workbench.importers.xstest import final_labels
from workbench.messages import prompt_hash

# Record counts and edge cases documented in each data set's README.
HH_RECORDS = {"harmless-base": 2312, "helpful-base": 2354, "helpful-online": 1137, "helpful-rejection-sampled": 2749}
HH_IDENTICAL = {"harmless-base": 0, "helpful-base": 2, "helpful-online": 2, "helpful-rejection-sampled": 32}
XSTEST_MODELS = {  # final_label counts (compliance, full refusal, partial refusal) from xstest/README.md
    "gpt4": (230, 211, 9),
    "llama2new": (176, 230, 44),
    "llama2orig": (101, 294, 55),
    "mistralguard": (210, 199, 41),
    "mistralinstruct": (374, 49, 27),
}


@pytest.mark.parametrize("name", sorted(HH_FILES))
def test_hh_rlhf_counts(project, real_data, name):
    report = import_file(project, real_data / HH_FILES[name])
    assert report.format == "hh-rlhf"
    assert report.records == HH_RECORDS[name]
    assert report.skipped == ({"identical chosen and rejected": HH_IDENTICAL[name]} if HH_IDENTICAL[name] else {})
    pairs = HH_RECORDS[name] - HH_IDENTICAL[name]
    source = f"hh-rlhf:{name}"
    assert count(project, "SELECT COUNT(*) FROM comparison WHERE source = ?", source) == pairs
    assert count(project, "SELECT COUNT(*) FROM comparison WHERE verdict = 'a' AND left_side IS NULL AND strength IS NULL") == pairs
    assert count(project, "SELECT COUNT(*) FROM response") == 2 * pairs
    # Every prompt ends with a user turn and every comparison's responses belong to its prompt.
    assert count(project, "SELECT COUNT(*) FROM prompt WHERE json_extract(messages, '$[#-1].role') != 'user'") == 0
    assert count(
        project,
        "SELECT COUNT(*) FROM comparison c JOIN response a ON a.id = c.response_a JOIN response b ON b.id = c.response_b"
        " WHERE a.prompt_id != c.prompt_id OR b.prompt_id != c.prompt_id",
    ) == 0
    assert report.added["comparisons"] == pairs and report.added["prompts"] == count(project, "SELECT COUNT(*) FROM prompt")

    # The store's counters (kept by triggers) agree with the rows the bulk writer inserted.
    stats = project.stats()
    assert stats["comparisons"] == stats["verdicts"]["a"] == pairs and stats["responses"] == 2 * pairs
    assert stats["prompts"] == count(project, "SELECT COUNT(*) FROM prompt")

    _check_replies_with_turn_markers(project, real_data, name)

    again = import_file(project, real_data / HH_FILES[name])
    assert sum(again.added.values()) == 0
    assert again.skipped["duplicate of a comparison already in the project"] == pairs
    assert count(project, "SELECT COUNT(*) FROM comparison") == pairs


def _hh_reference_prompts(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """An independent, slow statement of the rule: longest common prefix of turns, ending before an Assistant
    turn in both; the replies are the raw remainders."""
    import re

    marker = re.compile(r"\n\n(Human|Assistant):")

    def turns(t: str):
        ms = list(marker.finditer(t))
        return [(m.group(1), t[m.end(): ms[i + 1].start() if i + 1 < len(ms) else len(t)], m.end()) for i, m in enumerate(ms)]

    tc, tr = turns(chosen), turns(rejected)
    n = 0
    while n < min(len(tc), len(tr)) and tc[n][:2] == tr[n][:2]:
        n += 1
    for k in range(n, 0, -1):
        if k < len(tc) and k < len(tr) and tc[k][0] == tr[k][0] == "Assistant" and tc[k - 1][0] != "Assistant":
            prompt = [{"role": "user" if r == "Human" else "assistant", "content": t.strip()} for r, t, _ in tc[:k]]
            return prompt, chosen[tc[k][2]:].strip(), rejected[tr[k][2]:].strip()
    raise AssertionError("no split")


def _check_replies_with_turn_markers(project, real_data, name):
    """The README's edge case: splitting at the last "\\n\\nAssistant:" gives two different prompts (harmless-base 5,
    helpful-base 9); our prompt is the shared prefix and each reply keeps its embedded turns as text."""
    rows = [json.loads(line) for line in gzip.open(real_data / HH_FILES[name], "rt", encoding="utf-8")]
    tricky = [
        r for r in rows
        if r["chosen"] != r["rejected"]
        and r["chosen"][: r["chosen"].rfind("\n\nAssistant:")] != r["rejected"][: r["rejected"].rfind("\n\nAssistant:")]
    ]
    # README counts for the Anthropic files; the third-party copy documents 0 and 3.
    assert len(tricky) == {"harmless-base": 5, "helpful-base": 9, "helpful-online": 0, "helpful-rejection-sampled": 3}[name]
    for r in tricky:
        prompt, reply_c, reply_r = _hh_reference_prompts(r["chosen"], r["rejected"])
        row = project.conn.execute(
            "SELECT p.messages FROM comparison c JOIN prompt p ON p.id = c.prompt_id"
            " JOIN response a ON a.id = c.response_a JOIN response b ON b.id = c.response_b"
            " WHERE a.content = ? AND b.content = ? AND c.verdict = 'a'",
            (reply_c, reply_r),
        ).fetchone()
        assert row is not None
        assert json.loads(row[0]) == prompt
        # The reply that carries turn markers keeps them, so the stored prompt is shorter than a last-marker split.
        longer = reply_c if "Human:" in reply_c or "Assistant:" in reply_c else reply_r
        assert "Human:" in longer or "Assistant:" in longer


def test_xstest_prompts(project, real_data):
    report = import_file(project, real_data / "xstest" / "xstest_prompts.csv")
    assert report.format == "xstest" and report.records == 450 and not report.skipped
    assert count(project, "SELECT COUNT(*) FROM prompt") == 450
    tags = dict(project.conn.execute("SELECT tag, COUNT(*) FROM prompt_tag GROUP BY tag"))
    assert tags["xstest"] == 450 and tags["safe"] == 250 and tags["unsafe"] == 200
    assert sum(n for t, n in tags.items() if t.startswith("xstest:type=")) == 450
    assert all(n == 25 for t, n in tags.items() if t.startswith("xstest:type="))  # 18 types × 25
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag LIKE 'xstest:type=contrast_%' AND prompt_id IN"
                          " (SELECT prompt_id FROM prompt_tag WHERE tag = 'safe')") == 0
    again = import_file(project, real_data / "xstest" / "xstest_prompts.csv")
    assert not again.added and again.skipped == {"prompt already in the project": 450}


@pytest.mark.parametrize("model", sorted(XSTEST_MODELS))
def test_xstest_completions_over_refusal_flags(project, real_data, model):
    path = real_data / "xstest" / "model_completions" / f"xstest_v2_completions_{model}.csv"
    report = import_file(project, path)
    assert report.format == "xstest" and report.records == 450 and not report.skipped
    compliance, full, partial = XSTEST_MODELS[model]
    source = f"xstest:{model}"
    assert count(project, "SELECT COUNT(*) FROM response WHERE source = ? AND model = ?", source, model) == 450
    # The human label of every response is retrievable, with the README's counts.
    labels = final_labels(project, source)
    assert len(labels) == 450
    assert [list(labels.values()).count(x) for x in ("1_full_compliance", "2_full_refusal", "3_partial_refusal")] == [
        compliance, full, partial,
    ]
    # Over-refusal flags = refusals of safe prompts, counted straight from the file.
    import csv

    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    safe_full = sum(1 for r in rows if not r["type"].startswith("contrast_") and r["final_label"] == "2_full_refusal")
    safe_partial = sum(1 for r in rows if not r["type"].startswith("contrast_") and r["final_label"] == "3_partial_refusal")
    present = dict(project.conn.execute(
        "SELECT severity, COUNT(*) FROM safety_flag WHERE category = 'over_refusal' AND present = 1 GROUP BY severity"
    ))
    assert present.get("medium", 0) == safe_full and present.get("low", 0) == safe_partial
    assert project.stats()["flags"] == safe_full + safe_partial == report.added["flags"]
    assert report.added["labels marked absent"] == 450 - safe_full - safe_partial
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE present = 0 AND severity IS NULL") == 450 - safe_full - safe_partial
    again = import_file(project, path)
    assert not again.added and again.skipped == {"duplicate of a flag already in the project": 450}


def test_xstest_prompts_and_completions_share_prompts(project, real_data):
    import_file(project, real_data / "xstest" / "xstest_prompts.csv")
    report = import_file(project, real_data / "xstest" / "model_completions" / "xstest_v2_completions_gpt4.csv")
    # One completion's prompt text differs from the prompts file (v2-? "my enemy's" vs "someone's").
    assert report.added["prompts"] == 1
    assert count(project, "SELECT COUNT(*) FROM response") == 450


def test_moderation(project, real_data):
    path = real_data / "openai-moderation-api-release" / "data" / "samples-1680.jsonl.gz"
    report = import_file(project, path)
    assert report.format == "moderation" and report.records == 1680
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    duplicates = len(rows) - len({r["prompt"] for r in rows})
    assert report.skipped["duplicate prompt earlier in the file"] == duplicates == 10
    assert count(project, "SELECT COUNT(*) FROM prompt") == 1680 - duplicates
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag = 'moderation'") == 1680 - duplicates
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE response_id IS NOT NULL") == 0
    # A missing key means unknown: records with only S and S3 get sexual rows and nothing else.
    only_s = [r["prompt"] for r in rows if set(r) == {"prompt", "S", "S3"}]
    text_counts = {}
    for r in rows:
        text_counts[r["prompt"]] = text_counts.get(r["prompt"], 0) + 1
    unique_only_s = [t for t in only_s if text_counts[t] == 1]
    assert len(unique_only_s) > 200
    for text in unique_only_s[:50]:
        cats = {c for (c,) in project.conn.execute(
            "SELECT f.category FROM safety_flag f JOIN prompt p ON p.id = f.prompt_id WHERE p.content_hash = ?",
            (prompt_hash([{"role": "user", "content": text}]),),
        )}
        assert cats == {"sexual", "sexual_minors"}
    # Per-category rows from the file, computed independently: present if any known code is 1, absent only when
    # every code of the category is known and 0, no row otherwise (a missing code is unknown).
    codes = {"sexual": ("S",), "sexual_minors": ("S3",), "hate_harassment": ("H", "H2", "HR"), "violence": ("V", "V2"), "self_harm": ("SH",)}
    expected = {}
    seen = set()
    for r in rows:
        for cat, cs in codes.items():
            known = [c for c in cs if c in r]
            present = any(r[c] for c in known)
            if present or (known and len(known) == len(cs)):
                key = (r["prompt"], cat, present)
                if key not in seen:
                    seen.add(key)
                    expected[(cat, key[2])] = expected.get((cat, key[2]), 0) + 1
    got = {(c, bool(p)): n for c, p, n in project.conn.execute("SELECT category, present, COUNT(*) FROM safety_flag GROUP BY 1, 2")}
    assert got == expected
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE present = 1 AND severity != 'medium'") == 0
    assert report.added["flags"] == project.stats()["flags"]
    assert report.added["flags"] + report.added["labels marked absent"] == count(project, "SELECT COUNT(*) FROM safety_flag")
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE note NOT LIKE 'openai-moderation %'") == 0
    # Positive S count from the README (237) survives: every S=1 text has a present sexual flag.
    s_pos_texts = {r["prompt"] for r in rows if r.get("S") == 1}
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE category = 'sexual' AND present = 1") == len(s_pos_texts)
    # Texts labelled only HR=0 (hate H and H2 unknown) carry no hate_harassment label at all, not a false "absent".
    hr_only = {r["prompt"] for r in rows if "HR" in r and "H" not in r and "H2" not in r and r["HR"] == 0}
    assert len(hr_only) > 600
    hate_labelled = {json.loads(m)[0]["content"] for (m,) in project.conn.execute(
        "SELECT p.messages FROM safety_flag f JOIN prompt p ON p.id = f.prompt_id WHERE f.category = 'hate_harassment'"
    )}
    assert not hr_only & hate_labelled
    again = import_file(project, path)
    assert not again.added
    assert again.skipped["prompt already in the project"] == 1670


def test_mt_bench_questions_and_reference_answers(project, real_data):
    root = real_data / "lmsys-fastchat-llm-judge"
    q = import_file(project, root / "mt_bench" / "question.jsonl")
    assert q.format == "mt-bench" and q.records == 80 and q.added["prompts"] == 80
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag = 'mt-bench'") == 80
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag = 'mt-bench:turns=2'") == 80
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag LIKE 'category:%'") == 80
    # Only the first turn: no prompt holds two user turns without an assistant turn between them.
    assert count(project, "SELECT COUNT(*) FROM prompt WHERE json_array_length(messages) != 1") == 0

    a = import_file(project, root / "mt_bench" / "reference_answer" / "gpt-4.jsonl")
    assert a.records == 30 and a.added["demonstrations"] == 60 and a.added["prompts"] == 30
    # The second-turn prompts are user, assistant (the reference answer), user.
    roles = {r for (r,) in project.conn.execute(
        "SELECT group_concat(json_extract(value, '$.role')) FROM prompt, json_each(prompt.messages)"
        " WHERE json_array_length(messages) > 1 GROUP BY prompt.id")}
    assert roles == {"user,assistant,user"}
    assert count(project, "SELECT COUNT(*) FROM response WHERE source = 'mt-bench:gpt-4' AND model = 'gpt-4'") == 60

    v = import_file(project, root / "vicuna_bench" / "question.jsonl")
    assert v.records == 80
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag = 'vicuna-bench'") == 80
    assert v.added["prompts"] + v.skipped.get("prompt already in the project", 0) == 80
    va = import_file(project, root / "vicuna_bench" / "reference_answer" / "gpt-4.jsonl")
    assert va.records == 10 and va.added["demonstrations"] == 10

    again = import_file(project, root / "mt_bench" / "reference_answer" / "gpt-4.jsonl")
    assert not again.added and again.skipped == {"duplicate of a demonstration already in the project": 60}
