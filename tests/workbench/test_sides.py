"""Judgments in the expert's words: the screen side a stored verdict stands for, and back."""

from __future__ import annotations

import pytest

from workbench.sides import screen_verdict, stored_verdict, verdict_phrase


@pytest.mark.parametrize("left_side", ["a", "b", None])
@pytest.mark.parametrize("said", ["left", "right", "tie", "both_bad"])
def test_screen_words_go_to_the_store_and_back(said, left_side):
    assert screen_verdict(stored_verdict(said, left_side), left_side) == said


def test_the_response_shown_on_the_left_is_the_left_one():
    assert stored_verdict("left", "b") == "b" and stored_verdict("right", "b") == "a"
    assert verdict_phrase("b", "strong", "b") == "left much better"
    assert verdict_phrase("b", "slight", "a") == "right slightly better"
    assert verdict_phrase("a", "clear", None) == "left better"  # never shown: displayed with a on the left
    assert verdict_phrase("both_bad", None, "a") == "both bad" and verdict_phrase(None, None, "a") == "pending"
