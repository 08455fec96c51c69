"""Each import format on small hand-made files: what lands in the project, what is skipped and why."""

from __future__ import annotations

import json

import pytest

from tests.workbench.import_helpers import hh, write_csv, write_jsonl
from workbench.importers import IMPORT_FORMATS, import_file
from workbench.importers.staging import SELF_COMPARISON, Staging, fast_response_hash, prompt_json_and_hash
from workbench.messages import canonical_json, prompt_hash, response_hash
from workbench.reports import ImportReport
from workbench.taxonomy import DEFAULT_STRENGTH_MARGIN


def _comparisons(project):
    return [
        (project.get_prompt(c.prompt_id).messages, project.get_response(c.response_a).content,
         project.get_response(c.response_b).content, c.verdict, c.strength, c.left_side, c.source)
        for c in project.comparisons()
    ]


def _demos(project):
    out = []
    for d in project.demonstrations():
        r = project.get_response(d.response_id)
        out.append((project.get_prompt(d.prompt_id).messages, r.content, d.note, r.origin))
    return out


@pytest.mark.parametrize("msgs", [
    [{"role": "user", "content": 'Héllo "x"\n\u2028\\ \x00\x1f 你好 😀'}, {"role": "assistant", "content": "ok"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "a"}],
    [{"content": "keys in another order", "role": "user"}],
])
def test_hashes_match_the_store(msgs):
    text, h = prompt_json_and_hash(msgs)
    assert text == canonical_json(msgs) and h == prompt_hash(msgs)
    assert fast_response_hash('a "b" ’\n') == response_hash('a "b" ’\n')


def test_bulk_rows_read_back_like_store_rows(project, tmp_path):
    """Rows written by the bulk writer are the rows the store's own API would find (same hashes, same title)."""
    write_jsonl(tmp_path / "t.jsonl", [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}])
    import_file(project, tmp_path / "t.jsonl")
    pid, created = project.add_prompt([{"role": "user", "content": "Say hi"}])
    assert not created
    rid, created = project.add_response(pid, "Hi!")
    assert not created
    assert project.get_prompt(pid).title == "Say hi"
    assert project.find_comparison(rid, project.add_response(pid, "No.")[0]) is not None


def test_hh_small_edge_cases(project, tmp_path):
    rows = [
        {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Go away.")},
        {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Hello!")},  # identical
        {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Go away.")},  # duplicate in the file
        {"chosen": hh("Hi", "Go away."), "rejected": hh("Hi", "Hello!")},  # the same pair judged the other way
        # The chosen reply itself carries a "\n\nHuman:" turn: the prompt is the shared first turn only.
        {"chosen": hh("Q1", "A1", "Q2", "Good answer\n\nHuman: extra\n\nAssistant: more"), "rejected": hh("Q1", "A1", "Q2", "Bad")},
        # The divergence is inside an earlier reply: the prompt backs off to the last shared human turn.
        {"chosen": hh("Q", "A sure\n\nHuman: x\n\nAssistant: y"), "rejected": hh("Q", "A no")},
        {"chosen": "\n\nHuman: pad\n\nAssistant: a  ", "rejected": "\n\nHuman: pad\n\nAssistant:  a"},  # whitespace only
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl.gz", rows, gz=True)
    report = import_file(project, path)
    assert report.format == "hh-rlhf"
    assert report.skipped == {
        "identical chosen and rejected": 1,
        "duplicate of a comparison earlier in the file": 1,
        "same pair judged the other way earlier in the file": 1,
        "chosen and rejected replies differ only in whitespace": 1,
    }
    got = _comparisons(project)
    assert len(got) == 3
    assert got[0][:6] == ([{"role": "user", "content": "Hi"}], "Hello!", "Go away.", "a", None, None)
    assert got[0][6] == "hh-rlhf:pairs"
    assert got[1][0] == [
        {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"},
    ]
    assert got[1][1] == "Good answer\n\nHuman: extra\n\nAssistant: more" and got[1][2] == "Bad"
    assert got[2][0] == [{"role": "user", "content": "Q"}]
    assert got[2][1] == "A sure\n\nHuman: x\n\nAssistant: y"


def test_source_override(project, tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"chosen": hh("Hi", "Yes"), "rejected": hh("Hi", "No")}])
    import_file(project, path, source="my-batch")
    assert _comparisons(project)[0][6] == "my-batch"
    assert len(project.prompt_ids(source="my-batch")) == 1


def test_trl_standard_and_conversational_preference(project, tmp_path):
    conv_prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    rows = [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "margin": 2 / 3},
        {"prompt": conv_prompt, "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}], "margin": 1.0},
        # implicit prompt, conversational: the shared prefix is the prompt
        {"chosen": [*conv_prompt, {"role": "assistant", "content": "Four"}], "rejected": [*conv_prompt, {"role": "assistant", "content": "Fiveish"}], "margin": 0.34},
        {"prompt": "Same?", "chosen": "x", "rejected": "x"},
    ]
    report = import_file(project, write_jsonl(tmp_path / "prefs.jsonl", rows))
    assert report.format == "trl" and report.skipped == {"identical chosen and rejected": 1}
    got = _comparisons(project)
    assert [(g[1], g[2], g[4]) for g in got] == [("Paris.", "Lyon.", "clear"), ("4", "5", "strong"), ("Four", "Fiveish", "slight")]
    assert got[1][0] == conv_prompt and got[2][0] == conv_prompt  # explicit and implicit prompts agree


@pytest.mark.parametrize("strength", ["slight", "clear", "strong", None])
def test_margin_round_trips_our_export_margins(project, tmp_path, strength):
    row = {"prompt": "p", "chosen": "a", "rejected": "b", "margin": DEFAULT_STRENGTH_MARGIN[strength]}
    import_file(project, write_jsonl(tmp_path / "m.jsonl", [row]))
    assert _comparisons(project)[0][4] == strength


def test_trl_implicit_standard_text(project, tmp_path):
    rows = [{"chosen": "The sky is blue today.", "rejected": "The sky is green, obviously."}]
    import_file(project, write_jsonl(tmp_path / "implicit.jsonl", rows), "trl")
    got = _comparisons(project)
    assert got[0][0] == [{"role": "user", "content": "The sky is"}]
    assert got[0][1:3] == ("blue today.", "green, obviously.")


def test_trl_prompt_completion_and_messages_become_demonstrations(project, tmp_path):
    rows = [
        {"prompt": "Write a haiku", "completion": "Leaves fall / quietly"},
        {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Hello"}]},
        {"prompt": "Empty", "completion": "   "},
    ]
    r1 = import_file(project, write_jsonl(tmp_path / "sft.jsonl", rows))
    assert r1.format == "trl" and r1.added["demonstrations"] == 2 and r1.skipped == {"empty completion": 1}
    chat = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}]
    r2 = import_file(project, write_jsonl(tmp_path / "msgs.jsonl", chat), "trl")
    assert r2.added["demonstrations"] == 1
    demos = _demos(project)
    assert demos[0][:2] == ([{"role": "user", "content": "Write a haiku"}], "Leaves fall / quietly")
    assert demos[2][0] == chat[0]["messages"][:3] and demos[2][1] == "d"
    again = import_file(project, tmp_path / "sft.jsonl")
    assert not again.added and again.skipped["duplicate of a demonstration already in the project"] == 2


def test_trl_kto_labels(project, tmp_path):
    rows = [
        {"prompt": "Q", "completion": "good", "label": True},
        {"prompt": "Q", "completion": "bad", "label": False},
        {"prompt": "Q", "completion": "bad", "label": False},
        {"prompt": "Q", "completion": "worse", "label": "false"},
        {"prompt": "R", "completion": "meh", "label": 0},
        {"prompt": "R", "completion": "nope", "label": 0},
        {"prompt": "S", "completion": "alone", "label": False},
    ]
    report = import_file(project, write_jsonl(tmp_path / "kto.jsonl", rows))
    assert report.added["demonstrations"] == 1 and report.added["responses"] == 6
    assert report.skipped == {"duplicate response earlier in the file": 1}
    assert _demos(project)[0][1:3] == ("good", "kto:label=true")
    assert sum(r.source.endswith("#kto=false") for r in project.responses()) == 5
    # Undesirable completions paired so that winners / losers / both-bad give the labels back.
    got = {(g[0][0]["content"], g[1], g[2], g[3]) for g in _comparisons(project)}
    assert got == {("Q", "good", "bad", "a"), ("Q", "good", "worse", "a"), ("R", "meh", "nope", "both_bad")}
    again = import_file(project, tmp_path / "kto.jsonl")
    assert not again.added


def test_kto_round_trip_through_our_export(project, tmp_path):
    exporters = pytest.importorskip("workbench.exporters")
    rows = [
        {"prompt": "Q", "completion": "good", "label": True},
        {"prompt": "Q", "completion": "bad", "label": False},
        {"prompt": "R", "completion": "meh", "label": False},
        {"prompt": "R", "completion": "nope", "label": False},
        {"prompt": "T", "completion": "fine", "label": True},
    ]
    import_file(project, write_jsonl(tmp_path / "kto.jsonl", rows))
    out = tmp_path / "out.jsonl"
    exporters.export(project, out, "trl-kto", include_both_bad=True)  # both-bad pairs are opt-in
    back = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]

    def key(r):
        prompt = r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"]
        completion = r["completion"] if isinstance(r["completion"], str) else r["completion"][-1]["content"]
        return prompt, completion, bool(r["label"])

    assert sorted(map(key, back)) == sorted(map(key, rows))


def test_trl_prompt_only(project, tmp_path):
    report = import_file(project, write_jsonl(tmp_path / "p.jsonl", [{"prompt": "one"}, {"prompt": "two"}, {"prompt": "one"}]))
    assert report.format == "trl" and report.added["prompts"] == 2
    assert report.skipped == {"duplicate prompt earlier in the file": 1}


def test_openai_chat(project, tmp_path):
    rows = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 1}]},
        {"messages": [{"role": "user", "content": "just a question"}]},
    ]
    report = import_file(project, write_jsonl(tmp_path / "chat.jsonl", rows))
    assert report.format == "openai-chat"
    assert report.added["demonstrations"] == 1 and report.added["prompts"] == 2
    assert _demos(project)[0][0] == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_json_array_container(project, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"prompt": "p", "chosen": "a", "rejected": "b"}]), encoding="utf-8")
    report = import_file(project, tmp_path / "a.json")
    assert report.format == "trl" and report.added["comparisons"] == 1


def test_generic_csv(project, tmp_path):
    prefs = write_csv(tmp_path / "prefs.csv", ["prompt", "chosen", "rejected", "margin"],
                      [["Hi, there", "Hello!\nHow can I help?", "Bye", "1"], ["Q", "x", "x", ""]])
    report = import_file(project, prefs)
    assert report.format == "csv" and report.added["comparisons"] == 1
    assert report.skipped == {"identical chosen and rejected": 1}
    assert _comparisons(project)[0][1:5] == ("Hello!\nHow can I help?", "Bye", "a", "strong")
    sft = write_csv(tmp_path / "sft.csv", ["prompt", "completion"], [["P", "C"]])
    assert import_file(project, sft).added["demonstrations"] == 1
    only = write_csv(tmp_path / "only.csv", ["prompt"], [["A lone prompt"]])
    assert import_file(project, only, "csv").added["prompts"] == 1


def test_csv_gz(project, tmp_path):
    import gzip

    plain = write_csv(tmp_path / "x.csv", ["prompt", "completion"], [["P", "C"]])
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert import_file(project, gz).added["demonstrations"] == 1


def test_formats_list():
    assert IMPORT_FORMATS == ("auto", "hh-rlhf", "trl", "openai-chat", "xstest", "moderation", "mt-bench", "csv", "project")


def test_trl_text_prompt_beside_whole_conversations(project, tmp_path):
    """UltraFeedback-style rows: a text prompt plus chosen/rejected lists that already hold the user turn."""
    user = {"role": "user", "content": "Name a colour"}
    rows = [{"prompt": "Name a colour", "prompt_id": "x1", "score_chosen": 8.0,
             "chosen": [user, {"role": "assistant", "content": "Blue"}],
             "rejected": [user, {"role": "assistant", "content": "Seven"}]}]
    import_file(project, write_jsonl(tmp_path / "uf.jsonl", rows))
    assert _comparisons(project)[0][:3] == ([user], "Blue", "Seven")


def test_trl_tie_and_both_bad_columns(project, tmp_path):
    """Our trl-preference export adds bool tie / both_bad columns when asked to keep those verdicts."""
    rows = [
        {"prompt": "p1", "chosen": "a", "rejected": "b", "margin": 0.0, "tie": True, "both_bad": False},
        {"prompt": "p2", "chosen": "a", "rejected": "b", "margin": 0.0, "tie": False, "both_bad": True},
        {"prompt": "p3", "chosen": "a", "rejected": "b", "margin": 1.0, "tie": False, "both_bad": False},
    ]
    import_file(project, write_jsonl(tmp_path / "flags.jsonl", rows))
    assert [(g[3], g[4]) for g in _comparisons(project)] == [("tie", None), ("both_bad", None), ("a", "strong")]


def test_trl_list_prompt_beside_whole_conversations(project, tmp_path):
    """A list prompt that chosen and rejected already start with is a copy: the prompt is not doubled."""
    user = {"role": "user", "content": "What is 2+2?"}
    rows = [{"prompt": [user], "chosen": [user, {"role": "assistant", "content": "4"}],
             "rejected": [user, {"role": "assistant", "content": "5"}]}]
    report = import_file(project, write_jsonl(tmp_path / "pref.jsonl", rows))
    assert report.added["comparisons"] == 1
    assert _comparisons(project)[0][:4] == ([user], "4", "5", "a")
    # The usual TRL conversational form (the lists hold only the replies) still gets the prompt prepended.
    rows = [{"prompt": [user], "chosen": [{"role": "assistant", "content": "four"}],
             "rejected": [{"role": "assistant", "content": "five"}]}]
    import_file(project, write_jsonl(tmp_path / "pref2.jsonl", rows))
    assert _comparisons(project)[1][:4] == ([user], "four", "five", "a")
    assert project.prompt_count() == 1


def test_import_judges_pairs_queued_as_pending(project, tmp_path):
    """An imported judgment of a pair the project only has queued fills that pending row (in its orientation);
    a pair already judged is a duplicate; a pending blind-evaluation item or retest is not filled."""
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    pid, _ = project.add_prompt(prompt)
    four, _ = project.add_response(pid, "4")
    five, _ = project.add_response(pid, "5")
    six, _ = project.add_response(pid, "6")
    seven, _ = project.add_response(pid, "7")
    queued = project.add_comparison(pid, five, four, source="queue")  # the other way round from the file
    judged = project.add_comparison(pid, four, six, verdict="a", strength="clear")
    retest = project.add_retest(judged)
    eval_item = project.add_comparison(pid, four, seven, kind="eval", source="eval:1")
    rows = [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 1.0},
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "6"},
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "7"},
    ]
    report = import_file(project, write_jsonl(tmp_path / "pref.jsonl", rows))
    assert report.added == {"judgments of pending comparisons": 1}
    assert report.skipped == {
        "duplicate of a comparison already in the project": 1,
        "pair is queued for blind evaluation in the project": 1,
    }
    c = project.get_comparison(queued)
    assert (c.verdict, c.strength, c.guideline_version, c.source) == ("b", "strong", None, "queue")
    assert c.judged_at is not None
    assert project.get_comparison(retest).verdict is None
    assert project.get_comparison(eval_item).verdict is None
    assert len(project.comparisons()) == 4
    s = project.stats()
    assert s["verdicts"]["b"] == 1 and s["pending"] == 2
    again = import_file(project, tmp_path / "pref.jsonl")
    assert not again.added and again.skipped["duplicate of a comparison already in the project"] == 2


def test_staging_refuses_a_response_compared_with_itself():
    st = Staging(ImportReport("x", "trl"))
    p = st.prompt([{"role": "user", "content": "q"}], source="s")
    r = st.response(p, "same", source="s")
    assert not st.comparison(p, r, r, verdict="a", strength=None, source="s")
    assert st.comparisons == [] and st.report.skipped == {SELF_COMPARISON: 1}
