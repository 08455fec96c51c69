"""Fixtures of the engine tests: a tiny chat model built once per session (see tests/tiny_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_causal_lm


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama chat model folder (byte-level tokenizer, ChatML template, safetensors); treat as read-only."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")
