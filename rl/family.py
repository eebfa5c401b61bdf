"""The model families ThinkOnce supports, told apart by a model directory's config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

Family = Literal["qwen2_5_vl", "qwen3_vl"]
FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl")


def model_family(model_dir: str | Path) -> Family:
    """`qwen2_5_vl` or `qwen3_vl`, read from the model's config.json."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    model_type = config.get("model_type", "")
    if model_type in ("qwen2_5_vl", "qwen3_vl"):
        return model_type  # type: ignore[return-value]
    raise ValueError(f"{model_dir}: model_type '{model_type}' is not supported (expected one of {FAMILIES})")
