"""What ThinkOnce reads off a model directory's files: its family, and the vision token ids no
engine may sample (and the learner's log-probs leave out)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

Family = Literal["qwen2_5_vl", "qwen3_vl"]
FAMILIES: tuple[str, ...] = ("qwen2_5_vl", "qwen3_vl")
VISION_CONFIG_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>")


def model_family(model_dir: str | Path) -> Family:
    """`qwen2_5_vl` or `qwen3_vl`, read from the model's config.json."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    model_type = config.get("model_type", "")
    if model_type in ("qwen2_5_vl", "qwen3_vl"):
        return model_type  # type: ignore[return-value]
    raise ValueError(f"{model_dir}: model_type '{model_type}' is not supported (expected one of {FAMILIES})")


def suppressed_token_ids(model_dir: str | Path) -> list[int]:
    """Vision placeholder / start / end / pad token ids of a model, from its config and tokenizer files.

    Reads files only (no tokenizer object), so vLLM's workers can call it cheaply.
    """
    root = Path(model_dir)
    config = json.loads((root / "config.json").read_text())
    ids = {config[key] for key in VISION_CONFIG_KEYS if isinstance(config.get(key), int)}
    tokenizer_file = root / "tokenizer.json"
    if tokenizer_file.is_file():
        added = json.loads(tokenizer_file.read_text()).get("added_tokens", [])
        ids.update(tok["id"] for tok in added if tok.get("content") in VISION_TOKENS)
    if not ids:
        raise ValueError(f"{model_dir}: no vision token ids found in config.json or tokenizer.json")
    return sorted(ids)
