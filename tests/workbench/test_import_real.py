"""Importing the real sample files in tests/data: the counts the importer reports and stores agree with counts taken
from the files themselves, with the reasons for what it skips; re-importing adds nothing and counts the duplicates.

Each sample keeps the edge cases of its full file (tests/data/README.md says which records were taken and why); the
tests check that the edge cases are there, so a thinner sample cannot quietly take their point away.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.workbench.import_helpers import HH_FILES, count, hh_identical, read_csv, read_jsonl
from workbench.importers import import_file
from workbench.importers.xstest import final_labels
from workbench.messages import prompt_hash
from workbench.paths import xstest_prompts_file

# Edge cases each HH-RLHF sample keeps from its full test split (tests/data/anthropic-hh-rlhf*/README.md):
# (pairs with identical chosen and rejected, pairs whose replies carry turn markers).
HH_EDGE_CASES = {
    "harmless-base": (0, 5),
    "helpful-base": (2, 9),
    "helpful-online": (2, 0),
    "helpful-rejection-sampled": (32, 3),
}
XSTEST_MODELS = ("mistralguard", "mistralinstruct")  # the completions whose licence lets tests/data carry them
XSTEST_LABELS = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")


def _completions_file(test_data, model):
    return test_data / "xstest" / "model_completions" / f"xstest_v2_completions_{model}.csv"


@pytest.mark.parametrize("name", sorted(HH_FILES))
def test_hh_rlhf_counts(project, test_data, name):
    path = test_data / HH_FILES[name]
    rows = read_jsonl(path)
    identical = hh_identical(rows)
    assert (identical, len(_replies_with_turn_markers(rows))) == HH_EDGE_CASES[name]
    report = import_file(project, path)
    assert report.format == "hh-rlhf"
    assert report.records == len(rows)
    assert report.skipped == ({"identical chosen and rejected": identical} if identical else {})
    pairs = len(rows) - identical
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

    _check_replies_with_turn_markers(project, rows)

    again = import_file(project, path)
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


def _replies_with_turn_markers(rows):
    """Pairs for which splitting each transcript at its last "\\n\\nAssistant:" gives two different prompts: one
    reply itself holds further Human/Assistant turns."""
    return [
        r for r in rows
        if r["chosen"] != r["rejected"]
        and r["chosen"][: r["chosen"].rfind("\n\nAssistant:")] != r["rejected"][: r["rejected"].rfind("\n\nAssistant:")]
    ]


def _check_replies_with_turn_markers(project, rows):
    """Our prompt is the shared prefix of the two transcripts and each reply keeps its embedded turns as text."""
    for r in _replies_with_turn_markers(rows):
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


def test_xstest_prompts(project):
    """The prompts file shipped in resources/ (all of XSTest's 450 prompts)."""
    path = xstest_prompts_file()
    rows = read_csv(path)
    labels = Counter(r["label"] for r in rows)
    types = Counter(r["type"] for r in rows)
    assert (len(rows), labels["safe"], labels["unsafe"], len(types)) == (450, 250, 200, 18)  # resources/xstest/README.md
    report = import_file(project, path)
    assert report.format == "xstest" and report.records == len(rows) and not report.skipped
    assert count(project, "SELECT COUNT(*) FROM prompt") == len(rows)
    tags = dict(project.conn.execute("SELECT tag, COUNT(*) FROM prompt_tag GROUP BY tag"))
    assert tags["xstest"] == len(rows) and tags["safe"] == labels["safe"] and tags["unsafe"] == labels["unsafe"]
    assert {t.removeprefix("xstest:type="): n for t, n in tags.items() if t.startswith("xstest:type=")} == types
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag LIKE 'xstest:type=contrast_%' AND prompt_id IN"
                          " (SELECT prompt_id FROM prompt_tag WHERE tag = 'safe')") == 0
    again = import_file(project, path)
    assert not again.added and again.skipped == {"prompt already in the project": len(rows)}


@pytest.mark.parametrize("model", XSTEST_MODELS)
def test_xstest_completions_over_refusal_flags(project, test_data, model):
    path = _completions_file(test_data, model)
    rows = read_csv(path)
    # The sample covers every prompt type and every human label (tests/data/xstest/README.md).
    all_types = {r["type"] for r in read_csv(xstest_prompts_file())}
    assert {r["type"] for r in rows} == all_types and {r["final_label"] for r in rows} == set(XSTEST_LABELS)
    report = import_file(project, path)
    assert report.format == "xstest" and report.records == len(rows) and not report.skipped
    source = f"xstest:{model}"
    assert count(project, "SELECT COUNT(*) FROM response WHERE source = ? AND model = ?", source, model) == len(rows)
    # The human label of every response is retrievable, with the file's counts.
    labels = final_labels(project, source)
    assert len(labels) == len(rows)
    assert Counter(labels.values()) == Counter(r["final_label"] for r in rows)
    # Over-refusal flags = refusals of safe prompts, counted straight from the file.
    safe_full = sum(1 for r in rows if not r["type"].startswith("contrast_") and r["final_label"] == "2_full_refusal")
    safe_partial = sum(1 for r in rows if not r["type"].startswith("contrast_") and r["final_label"] == "3_partial_refusal")
    assert safe_full and safe_partial
    present = dict(project.conn.execute(
        "SELECT severity, COUNT(*) FROM safety_flag WHERE category = 'over_refusal' AND present = 1 GROUP BY severity"
    ))
    assert present.get("medium", 0) == safe_full and present.get("low", 0) == safe_partial
    assert project.stats()["flags"] == safe_full + safe_partial == report.added["flags"]
    not_flagged = len(rows) - safe_full - safe_partial
    assert report.added["labels marked absent"] == not_flagged
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE present = 0 AND severity IS NULL") == not_flagged
    # Annotator disagreement travels with the flag's note.
    disagreements = sum(r["agreement"] != "TRUE" for r in rows)
    assert disagreements and count(project, "SELECT COUNT(*) FROM safety_flag WHERE note LIKE '%agreement=FALSE%'") == disagreements
    again = import_file(project, path)
    assert not again.added and again.skipped == {"duplicate of a flag already in the project": len(rows)}


def test_xstest_prompts_and_completions_share_prompts(project, test_data):
    import_file(project, xstest_prompts_file())
    path = _completions_file(test_data, "mistralinstruct")
    rows = read_csv(path)
    report = import_file(project, path)
    # A completion shares its prompt with the prompts file unless the texts differ: v2-195 reads "my enemy's" where
    # the prompts file reads "someone's"; the sample keeps that row.
    known = {r["prompt"] for r in read_csv(xstest_prompts_file())}
    differing = [r["id"] for r in rows if r["prompt"] not in known]
    assert differing == ["v2-195"]
    assert report.added["prompts"] == len(differing)
    assert count(project, "SELECT COUNT(*) FROM response") == len(rows)


def test_moderation(project, test_data):
    path = test_data / "openai-moderation-api-release" / "data" / "samples-1680.jsonl.gz"
    report = import_file(project, path)
    rows = read_jsonl(path)
    assert report.format == "moderation" and report.records == len(rows)
    duplicates = len(rows) - len({r["prompt"] for r in rows})
    # The sample keeps all 10 texts the full file holds twice, both times (tests/data/openai-moderation-api-release).
    assert report.skipped["duplicate prompt earlier in the file"] == duplicates == 10
    unique = len(rows) - duplicates
    assert count(project, "SELECT COUNT(*) FROM prompt") == unique
    assert count(project, "SELECT COUNT(*) FROM prompt_tag WHERE tag = 'moderation'") == unique
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE response_id IS NOT NULL") == 0
    # A missing key means unknown: records with only S and S3 get sexual rows and nothing else.
    only_s = [r["prompt"] for r in rows if set(r) == {"prompt", "S", "S3"}]
    text_counts = Counter(r["prompt"] for r in rows)
    unique_only_s = [t for t in only_s if text_counts[t] == 1]
    assert len(unique_only_s) >= 10  # the sample keeps the first 10 records of every label pattern
    for text in unique_only_s:
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
    # Every S=1 text has a present sexual flag.
    s_pos_texts = {r["prompt"] for r in rows if r.get("S") == 1}
    assert count(project, "SELECT COUNT(*) FROM safety_flag WHERE category = 'sexual' AND present = 1") == len(s_pos_texts)
    # Texts labelled only HR=0 (hate H and H2 unknown) carry no hate_harassment label at all, not a false "absent".
    hr_only = {r["prompt"] for r in rows if "HR" in r and "H" not in r and "H2" not in r and r["HR"] == 0}
    assert len(hr_only) >= 10
    hate_labelled = {json.loads(m)[0]["content"] for (m,) in project.conn.execute(
        "SELECT p.messages FROM safety_flag f JOIN prompt p ON p.id = f.prompt_id WHERE f.category = 'hate_harassment'"
    )}
    assert not hr_only & hate_labelled
    again = import_file(project, path)
    assert not again.added
    assert again.skipped["prompt already in the project"] == unique


def test_mt_bench_questions_and_reference_answers(project, test_data):
    root = test_data / "lmsys-fastchat-llm-judge"
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
