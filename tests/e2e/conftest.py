"""Fixtures of the end-to-end tests: the tiny chat model (built once per session, see tests/tiny_models.py) and the
training-desk project and session of tests/ui/engine_fixtures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_causal_lm
from tests.ui.engine_fixtures import session, training_project_path  # noqa: F401 - fixtures

TINY_SETTINGS = dict(device="cpu", dtype="float32", quantize="none", batch_size=2, lr=1e-3, lora_r=4, lora_alpha=8,
                     eval_fraction=0.2, num_threads=1, log_every=1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama chat model folder (byte-level tokenizer, ChatML template, safetensors); treat as read-only."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")
