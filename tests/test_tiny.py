"""Offline tiny Qwen2.5-VL / Qwen3-VL: build, save, load, prompt with video, forward in transformers and vLLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rl.prompts import PromptRenderer
from rl.tiny import build_tiny, model_family
from rl.types import Clip, Sample

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


def _clip(family: str, seed: int = 0) -> Clip:
    f = 28 if family == "qwen2_5_vl" else 32
    frames = np.random.default_rng(seed).integers(0, 255, (8, 2 * f, 3 * f, 3), dtype=np.uint8)
    return Clip(frames=frames, indices=list(range(0, 32, 4)), video_fps=8.0, total_frames=32, duration=4.0, sample_fps=2.0)


def _sample() -> Sample:
    return Sample(id="t0", source="synthetic", problem_type="exact_match", question="What colour is the square?\nA. red\nB. blue",
                  answer="A", options=["red", "blue"], media_kind="video", media_path="v.mp4")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tiny_qwen25, tiny_qwen3):
    return request.param, (tiny_qwen25 if request.param == "qwen2_5_vl" else tiny_qwen3)


def test_build_is_deterministic_and_self_describing(tmp_path):
    a = build_tiny("qwen2_5_vl", tmp_path / "a", seed=3)
    b = build_tiny("qwen2_5_vl", tmp_path / "b", seed=3)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert model_family(a) == "qwen2_5_vl"
    assert json.loads((a / "thinkonce_tiny.json").read_text())["seed"] == 3


def test_unknown_family_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model family"):
        build_tiny("llava", tmp_path / "x")


def test_vllm_cpu_head_size_constraint(tiny):
    family, path = tiny
    cfg = json.loads((path / "config.json").read_text())["text_config"]
    assert cfg["head_dim"] in (32, 64, 80, 96, 112, 128)


def test_renderer_expands_video_placeholders(tiny):
    family, path = tiny
    renderer = PromptRenderer(str(path))
    mi = renderer.render(_sample(), _clip(family))
    video_id = renderer.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    grid = mi.hf_inputs["video_grid_thw"][0]
    assert mi.prompt_ids.count(video_id) == int(grid.prod()) // 4
    assert mi.engine_prompt_ids.count(video_id) == 1
    text = renderer.tokenizer.decode(mi.prompt_ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\nFIRST:")
    assert text.endswith("Put your final answer in \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")


def test_transformers_forward_from_saved_dir(tiny):
    from transformers import AutoModelForImageTextToText

    family, path = tiny
    renderer = PromptRenderer(str(path))
    mi = renderer.render(_sample(), _clip(family))
    model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32).eval()
    ids = torch.tensor([mi.prompt_ids])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **mi.hf_inputs).logits
    assert logits.shape == (1, len(mi.prompt_ids), len(renderer.tokenizer))
    assert torch.isfinite(logits).all()
    # the video changes the output: the vision tower is wired in
    other = renderer.render(_sample(), _clip(family, seed=1))
    with torch.no_grad():
        logits2 = model(input_ids=ids, attention_mask=torch.ones_like(ids), **other.hf_inputs).logits
    assert not torch.allclose(logits[0, -1], logits2[0, -1])


def test_vllm_cpu_loads_and_matches_hf_prompt(tiny):
    from vllm import LLM, SamplingParams

    family, path = tiny
    renderer = PromptRenderer(str(path))
    mi = renderer.render(_sample(), _clip(family))
    llm = LLM(model=str(path), dtype="float32", max_model_len=2048, limit_mm_per_prompt={"video": 1, "image": 1}, seed=0)
    try:
        prompt = {"prompt_token_ids": mi.engine_prompt_ids, "multi_modal_data": mi.mm_data, "mm_processor_kwargs": mi.mm_kwargs}
        out = llm.generate([prompt], SamplingParams(max_tokens=4, temperature=0.0, logprobs=0), use_tqdm=False)[0]
        assert list(out.prompt_token_ids) == mi.prompt_ids
        assert len(out.outputs[0].token_ids) == 4
    finally:
        del llm
