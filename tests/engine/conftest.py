"""Fixtures of the engine tests: a tiny chat model built once per session (see tests/tiny_models.py), and one torch
thread for every in-process engine test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_models import build_tiny_causal_lm


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # On a busy 2-core machine two threads of a tiny model spin against each other (up to 18x slower than one).
    # Worker subprocesses set their own thread count; this only affects jobs and models run in the test process.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama chat model folder (byte-level tokenizer, ChatML template, safetensors); treat as read-only."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")
