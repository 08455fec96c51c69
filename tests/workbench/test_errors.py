"""InputError says where the problem is, each part once: file, line, field."""

from __future__ import annotations

import pytest

from workbench.errors import InputError


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"path": "a.jsonl", "line": 3, "field": "chosen"}, "a.jsonl:line 3 (field 'chosen'): bad"),
        ({"path": "a.jsonl", "line": 3}, "a.jsonl:line 3: bad"),
        ({"path": "a.jsonl", "field": "chosen"}, "a.jsonl, field 'chosen': bad"),
        ({"line": 7, "field": "chosen"}, "line 7 (field 'chosen'): bad"),
        ({"field": "chosen"}, "field 'chosen': bad"),
        ({"path": "a.jsonl"}, "a.jsonl: bad"),
        ({}, "bad"),
    ],
)
def test_message_names_each_place_once(kwargs, expected):
    err = InputError("bad", **kwargs)
    assert str(err) == expected
    assert err.detail == "bad"
