"""Offline tiny Qwen2.5-VL / Qwen3-VL models, so the whole real stack runs with no hub access.

`build_tiny(family, out_dir)` writes an HF model directory (config, safetensors, a tokenizer trained
here with `tokenizers`, chat template, image and video processors) that the same
`from_pretrained(dir)` path loads as a real checkpoint, in transformers and in vLLM. Sizes respect
vLLM-CPU's attention kernels (head size 32). Weights are random (seeded); the demo warm-starts
them on the output format (rl.warmstart).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rl.family import FAMILIES, Family
from rl.prompts import GROUNDED_QA_TEMPLATE, GROUNDING_TEMPLATE, SYSTEM_PROMPT, USER_SUFFIX
from rl.runtime import plain_file_mode

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
THINK_TOKENS = ["<think>", "</think>"]
"""Single added tokens, as in Qwen3's tokenizer (Qwen2.5's splits them; the code handles both)."""

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _corpus() -> list[str]:
    """Text the tokenizer is trained on: the prompts, answer payloads, digits and LaTeX."""
    words = (
        "the a an is are what which how many colour color red green blue yellow white black square circle "
        "shape moving appears appear disappears video frame object objects left right top bottom when does "
        "first second last count number seconds answer option options question describe segment start end "
        "time timestamps locate correct wrong review reasoning think step because therefore so yes no true "
        "false analyze problem let's I see in of on at to and or with from it this that there"
    ).split()
    lines = [SYSTEM_PROMPT, USER_SUFFIX, GROUNDING_TEMPLATE, GROUNDED_QA_TEMPLATE]
    lines += [" ".join(words[i : i + 7]) for i in range(0, len(words), 3)]
    lines += [f"\\boxed{{{c}}}" for c in "ABCDEFGH"]
    lines += [f"{a}. {w}" for a, w in zip("ABCDEFGH", words)]
    lines += [f"\\boxed{{[{s / 10:.1f}, {(s + 17) / 10:.1f}]}}" for s in range(0, 200, 7)]
    lines += [f"\\boxed{{{chr(65 + s % 4)} <> [{s / 10:.1f}, {(s + 9) / 10:.1f}]}}" for s in range(0, 100, 11)]
    lines += [str(n) for n in range(0, 200)]
    lines += ["\\frac{1}{2} \\sqrt{2} x^{2} + y = 3 \\times 4 \\cdot 5 - 6 \\div 7 \\pi \\le \\ge ( ) [ ] { } , . : ;"]
    lines += ["\\boxed{Let's analyze the problem step by step.}<think>I see the red square.</think>\\boxed{B}"]
    return lines * 4


def build_tokenizer(vocab_size: int = 640):
    """A byte-level BPE tokenizer with Qwen's special tokens, trained locally (no hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    hf.add_tokens(THINK_TOKENS)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _vision_ids(tokenizer) -> dict[str, int]:
    ids = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in ids.items()}


def _text_config(tokenizer, hidden: int, layers: int) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 32,
        "num_key_value_heads": max(1, hidden // 64),
        "head_dim": 32,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "tie_word_embeddings": False,
    }


def build_config(family: Family, tokenizer, hidden: int = 128, layers: int = 2):
    """The model config of a tiny `family` model whose token ids match `tokenizer`."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    text = _text_config(tokenizer, hidden, layers)
    vision = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "out_hidden_size": hidden}
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}
        text["max_window_layers"] = layers
        vision.update(patch_size=14, window_size=112, fullatt_block_indexes=[1], tokens_per_second=2)
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **_vision_ids(tokenizer))
    elif family == "qwen3_vl":
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5e5,
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        }
        vision.update(patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[1], hidden_act="gelu_pytorch_tanh")
        cfg = Qwen3VLConfig(text_config=text, vision_config=vision, **_vision_ids(tokenizer))
    else:
        raise ValueError(f"unknown model family '{family}', expected one of {FAMILIES}")
    cfg.tie_word_embeddings = False
    cfg.architectures = [type(cfg).__name__.replace("Config", "ForConditionalGeneration")]
    return cfg


def build_processor(family: Family, tokenizer):
    """Image + video processors and the processor object, built from objects (nothing fetched)."""
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    patch = 14 if family == "qwen2_5_vl" else 16
    f = 2 * patch
    # Per-frame bounds of the training recipe (method.md section 5); frames arrive already resized.
    size = {"shortest_edge": 16 * f * f, "longest_edge": 768 * f * f}
    # Qwen3-VL normalises images and videos alike with mean = std = 0.5 (vLLM applies the image
    # processor's values to videos too, so the two must agree); Qwen2.5-VL uses CLIP's statistics.
    norm = {} if family == "qwen2_5_vl" else {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    image = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size, **norm)
    if family == "qwen2_5_vl":
        video = Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
        return Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=CHAT_TEMPLATE)
    video = Qwen3VLVideoProcessor(
        patch_size=patch, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 16 * f * f, "longest_edge": 4096 * f * f}
    )
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=CHAT_TEMPLATE)


def build_tiny(family: Family, out_dir: str | Path, *, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """Build, initialise (seeded) and save a tiny `family` model directory; returns its path."""
    from transformers import AutoModelForImageTextToText

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = build_config(family, tokenizer, hidden=hidden, layers=layers)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    plain_file_mode(out / "model.safetensors")
    build_processor(family, tokenizer).save_pretrained(out)
    (out / "thinkonce_tiny.json").write_text(json.dumps({"family": family, "hidden": hidden, "layers": layers, "seed": seed}))
    return out
