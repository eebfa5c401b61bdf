"""Qwen2.5-VL 3-D positions in transformers (rl.mrope installed) equal vLLM's, video length included.

transformers 5.19 alone starts the text after a video at `max(grid_h, grid_w) / merge` past its
start, ignoring temporal positions; vLLM (and Qwen's reference) at the video's largest position
+ 1. With 8-frame clips the two differed by 3 positions and the learner's log-probs by ~4e-3 from
the engine's. vLLM's own position function is called here on real feature specs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl.config import load_config
from rl.data.synthetic import generate_synthetic
from rl.inputs import InputBuilder
from rl.mrope import install_reference_mrope, rope_index


def _vllm_positions(hf_config, num_tokens: int, items: list[tuple[str, int, list[int], float]]) -> tuple[torch.Tensor, int]:
    """vLLM 0.32's `get_mrope_input_positions` for (modality, offset, grid_thw, second_per_grid_t) items."""
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
    from vllm.multimodal.inputs import (
        MultiModalBatchedField,
        MultiModalFeatureSpec,
        MultiModalFieldElem,
        MultiModalKwargsItem,
        PlaceholderRange,
    )

    merge = hf_config.vision_config.spatial_merge_size
    features = []
    for i, (modality, offset, grid, seconds) in enumerate(items):
        data = {f"{modality}_grid_thw": MultiModalFieldElem(torch.tensor(grid), MultiModalBatchedField())}
        if modality == "video":
            data["second_per_grid_ts"] = MultiModalFieldElem(torch.tensor(seconds), MultiModalBatchedField())
        length = grid[0] * grid[1] * grid[2] // merge**2
        features.append(MultiModalFeatureSpec(MultiModalKwargsItem(data), modality, f"item{i}", PlaceholderRange(offset, length)))
    model = object.__new__(Qwen2_5_VLForConditionalGeneration)  # the position code reads only the config
    model.config = hf_config
    positions, delta = model.get_mrope_input_positions(list(range(num_tokens)), features)
    return positions, int(delta)


@pytest.fixture(scope="module")
def hf_config(tiny_qwen25):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_qwen25)


def _layout(merge: int, items: list[tuple[str, list[int], float]], gap: int = 5):
    """Token types and vLLM items of `gap` text tokens, then each item followed by `gap` text tokens."""
    types, vllm_items, offset = [0] * gap, [], gap
    for modality, grid, seconds in items:
        n = grid[0] * grid[1] * grid[2] // merge**2
        vllm_items.append((modality, offset, grid, seconds))
        types += [1 if modality == "image" else 2] * n + [0] * gap
        offset += n + gap
    return types, vllm_items


@pytest.mark.parametrize(
    "items",
    [
        [("video", [2, 8, 8], 1.0)],  # 4 frames at 112x112: t spans 0..2, h/w 0..3 (agreed before)
        [("video", [4, 8, 8], 1.0)],  # 8 frames: t spans 0..6 (text started 3 early)
        [("video", [4, 8, 8], 1.5)],  # 8 frames of a 6 s clip: t 0, 3, 6, 9
        [("video", [8, 4, 6], 0.5)],
        [("video", [3, 8, 8], 0.7)],  # fractional interval, truncated like vLLM
        [("image", [1, 8, 12], 1.0), ("video", [4, 4, 4], 2.0), ("video", [2, 8, 8], 1.0)],
    ],
)
def test_rope_index_equals_vllm(hf_config, items):
    merge, tps = hf_config.vision_config.spatial_merge_size, hf_config.vision_config.tokens_per_second
    types, vllm_items = _layout(merge, items)
    want, want_delta = _vllm_positions(hf_config, len(types), vllm_items)
    images = [grid for m, grid, _ in items if m == "image"]
    videos = [(grid, s) for m, grid, s in items if m == "video"]
    got, delta = rope_index(
        torch.zeros(1, len(types), dtype=torch.long),
        torch.tensor([types]),
        spatial_merge_size=merge,
        tokens_per_second=tps,
        image_grid_thw=torch.tensor(images) if images else None,
        video_grid_thw=torch.tensor([g for g, _ in videos]),
        second_per_grid_ts=torch.tensor([s for _, s in videos]),
    )
    assert torch.equal(got[:, 0], want)
    assert int(delta) == want_delta


def test_transformers_model_positions_equal_vllm_on_8_frame_clips(tiny_qwen25, hf_config, tmp_path):
    """The installed method on real inputs, one row at a time and as a right-padded batch."""
    from transformers import AutoModelForImageTextToText

    install_reference_mrope()
    cfg = load_config("configs/tiny_cpu.yaml", [])
    builder = InputBuilder(str(tiny_qwen25), cfg.data)
    inputs = [builder.build(s) for s in generate_synthetic(Path(tmp_path), 4, seed=3)]
    assert sorted({int(mi.hf_inputs["video_grid_thw"][0, 0]) for mi in inputs}) == [2, 4]  # 4- and 8-frame clips
    base = AutoModelForImageTextToText.from_pretrained(tiny_qwen25).model
    video_id = hf_config.video_token_id
    length = max(len(mi.prompt_ids) for mi in inputs)
    ids = torch.zeros(len(inputs), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, mi in enumerate(inputs):
        h = mi.hf_inputs
        n = len(mi.prompt_ids)
        grid, seconds = h["video_grid_thw"][0].tolist(), float(h["second_per_grid_ts"][0])
        want, want_delta = _vllm_positions(hf_config, n, [("video", mi.prompt_ids.index(video_id), grid, seconds)])
        got, delta = base.get_rope_index(torch.tensor([mi.prompt_ids]), mm_token_type_ids=h["mm_token_type_ids"],
                                         video_grid_thw=h["video_grid_thw"], second_per_grid_ts=h["second_per_grid_ts"])
        assert torch.equal(got[:, 0], want) and int(delta) == want_delta, mi.sample.id
        ids[row, :n], mask[row, :n], types[row, :n] = torch.tensor(mi.prompt_ids), 1, h["mm_token_type_ids"][0]
    batched, _ = base.get_rope_index(ids, mm_token_type_ids=types, attention_mask=mask,
                                     video_grid_thw=torch.cat([mi.hf_inputs["video_grid_thw"] for mi in inputs]),
                                     second_per_grid_ts=torch.cat([mi.hf_inputs["second_per_grid_ts"] for mi in inputs]))
    for row, mi in enumerate(inputs):
        single, _ = base.get_rope_index(torch.tensor([mi.prompt_ids]), mm_token_type_ids=mi.hf_inputs["mm_token_type_ids"],
                                        video_grid_thw=mi.hf_inputs["video_grid_thw"],
                                        second_per_grid_ts=mi.hf_inputs["second_per_grid_ts"])
        assert torch.equal(batched[:, row, : len(mi.prompt_ids)], single[:, 0])
