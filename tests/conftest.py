"""Shared fixtures: offline tiny models (built once per session) and rendered video prompts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rl.runtime import configure_environment

configure_environment("cpu")

ARTIFACTS = Path(os.environ.get("THINKONCE_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts" / "test"))


def _tiny(family: str) -> Path:
    from rl.tiny import build_tiny

    out = ARTIFACTS / f"tiny-{family}"
    if not (out / "model.safetensors").is_file():
        build_tiny(family, out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen25() -> Path:
    """A tiny random Qwen2.5-VL model directory."""
    return _tiny("qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen3() -> Path:
    """A tiny random Qwen3-VL model directory."""
    return _tiny("qwen3_vl")


@pytest.fixture(scope="session")
def toy_dir(tiny_qwen25) -> Path:
    """A tiny Qwen2.5-VL trained to be confident on part of the toy prompts (rollout.toy)."""
    from rollout.toy import confident_model

    return confident_model(tiny_qwen25.parent, "qwen2_5_vl")
