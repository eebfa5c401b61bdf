"""Offline tiny Qwen2.5-VL / Qwen3-VL: build, save, load, prompt with video, forward in transformers and vLLM;
the official prompt strings by role, and the plain-text `<think>` tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rl.config import DataConfig
from rl.data.synthetic import generate_synthetic
from rl.family import model_family
from rl.inputs import InputBuilder
from rl.prompts import SYSTEM_PROMPT, SYSTEM_PROMPT_EVAL, Prompts, plain_think_tokenizer
from rl.render import PromptRenderer, user_text
from rl.tiny import build_tiny
from rl.types import Clip, Sample

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


def _clip(family: str, seed: int = 0) -> Clip:
    f = 28 if family == "qwen2_5_vl" else 32
    frames = np.random.default_rng(seed).integers(0, 255, (8, 2 * f, 3 * f, 3), dtype=np.uint8)
    return Clip(frames=frames, indices=list(range(0, 32, 4)), video_fps=8.0, total_frames=32, duration=4.0, sample_fps=2.0)


def _sample() -> Sample:
    return Sample(id="t0", source="synthetic", problem_type="exact_match",
                  question="Question: What colour is the square?\nOptions:\nA. red\nB. blue\n",
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
    llm = LLM(model=str(path), dtype="float32", max_model_len=2048, limit_mm_per_prompt={"video": 1, "image": 1}, seed=0,
              enforce_eager=True)
    try:
        prompt = {"prompt_token_ids": mi.engine_prompt_ids, "multi_modal_data": mi.mm_data, "mm_processor_kwargs": mi.mm_kwargs}
        out = llm.generate([prompt], SamplingParams(max_tokens=4, temperature=0.0, logprobs=0), use_tqdm=False)[0]
        assert list(out.prompt_token_ids) == mi.prompt_ids
        assert len(out.outputs[0].token_ids) == 4
    finally:
        del llm


# -- the official prompts (method.md section 2), verbatim

OFFICIAL_SYSTEM = """You are a helpful assistant.
FIRST: Output your initial answer inside the first \\boxed{...} without any analysis or explanations. If you cannot determine the answer without reasoning, output \\boxed{Let's analyze the problem step by step.} instead.
THEN: Think through the reasoning as an internal monologue enclosed within <think>...</think>.
AT LAST: Output the final answer again inside \\boxed{...}. If you believe the previous answer was correct, repeat it; otherwise, correct it.
Output format: \\boxed{...}<think>...</think>\\boxed{...}"""


def test_system_prompt_is_verbatim_without_newline_for_training_and_with_it_for_eval() -> None:
    assert SYSTEM_PROMPT == OFFICIAL_SYSTEM
    assert SYSTEM_PROMPT_EVAL == OFFICIAL_SYSTEM + "\n"
    assert Prompts.official(training=True).system == OFFICIAL_SYSTEM
    assert Prompts.official(training=False).system == OFFICIAL_SYSTEM + "\n"
    assert Prompts.from_config(DataConfig()).system == OFFICIAL_SYSTEM
    assert Prompts.from_config(DataConfig(), training=False).system == OFFICIAL_SYSTEM + "\n"


def test_builder_renders_the_training_or_the_eval_system_prompt(tiny_qwen25) -> None:
    text = Sample(id="m", source="DAPO-Math", problem_type="math", question="What is 2 + 3?", answer="5")
    train = InputBuilder(str(tiny_qwen25), DataConfig()).build(text)
    infer = InputBuilder(str(tiny_qwen25), DataConfig(), training=False).build(text)
    tok = InputBuilder(str(tiny_qwen25), DataConfig()).tokenizer
    assert tok.decode(train.prompt_ids) == (
        f"<|im_start|>system\n{OFFICIAL_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?\n"
        "Put your final answer in \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.decode(infer.prompt_ids).startswith(f"<|im_start|>system\n{OFFICIAL_SYSTEM}\n<|im_end|>\n")


def test_synthetic_tasks_render_through_the_official_templates(tmp_path) -> None:
    samples = generate_synthetic(tmp_path, 4, seed=0)
    choice, count, ground, gqa = (user_text(s) for s in samples)
    assert choice.startswith("Question: ") and "\nOptions:\nA. " in choice
    assert choice.endswith("\n\nPut your final answer in \\boxed{}.")
    assert count.endswith("?\nPut your final answer in \\boxed{}.")
    assert ground == (
        "Locate the start and end timestamps of the video segment corresponding to the description: "
        "The red square is visible. Please provide the start and end timestamps (in seconds, precise to one decimal "
        "places) in the format \\boxed{[start, end]}."
    )
    options = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", samples[3].options))
    assert gqa == (
        f"Question: What colour is the square that appears?\nOptions:\n{options}\n"
        "Please answer the question, and then provide the video segment that best supports your answer. "
        "The start and end timestamps must be in seconds with exactly one decimal place.\n"
        "Output format: \\boxed{answer <> [start, end]}. For example: \\boxed{A <> [20.3, 30.8]}."
    )


def test_prompts_are_overridable_from_config_and_files(tmp_path) -> None:
    (tmp_path / "system.txt").write_text("Be brief.\n")
    (tmp_path / "prompts.yaml").write_text("answer_suffix: ' Answer in a box.'\ngrounding: 'Find: {description}'\n")
    data = DataConfig(system_prompt=str(tmp_path / "system.txt"), prompts=str(tmp_path / "prompts.yaml"))
    train, infer = Prompts.from_config(data), Prompts.from_config(data, training=False)
    assert (train.system, infer.system) == ("Be brief.", "Be brief.\n")
    math = Sample(id="m", source="s", problem_type="math", question="1+1?", answer="2")
    ground = Sample(id="g", source="s", problem_type="iou", question="a dog runs", answer=[1.0, 2.0])
    assert (user_text(math, train), user_text(ground, train)) == ("1+1? Answer in a box.", "Find: a dog runs")
    assert Prompts.from_config(DataConfig(system_prompt="Inline text.")).system == "Inline text."
    (tmp_path / "bad.yaml").write_text("system: 'no'\n")
    with pytest.raises(ValueError, match="must map some of"):
        Prompts.from_config(DataConfig(prompts=str(tmp_path / "bad.yaml")))


def test_plain_think_tokenizer_spells_the_tags_with_ordinary_pieces(tiny_qwen3, tmp_path) -> None:
    from transformers import AutoTokenizer

    stock = AutoTokenizer.from_pretrained(str(tiny_qwen3))
    assert len(stock("<think>", add_special_tokens=False)["input_ids"]) == 1
    out = plain_think_tokenizer(tiny_qwen3, tmp_path / "plain")
    plain = AutoTokenizer.from_pretrained(str(out))
    text = "\\boxed{A}<think>look</think>\\boxed{A}"
    ids = plain(text, add_special_tokens=False)["input_ids"]
    assert len(plain("<think>", add_special_tokens=False)["input_ids"]) > 1
    assert stock.convert_tokens_to_ids("<think>") not in ids
    assert plain.decode(ids) == text
    assert (out / "model.safetensors").resolve() == (tiny_qwen3 / "model.safetensors").resolve()
    assert model_family(out) == "qwen3_vl"
