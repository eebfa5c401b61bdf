"""The tiny models' format warm start teaches the grammar and no answer: a1's option letter is trained
toward the uniform distribution over the options."""

from __future__ import annotations

import numpy as np
import torch

from rl.config import DataConfig
from rl.data.synthetic import generate_synthetic
from rl.inputs import InputBuilder
from rl.mrope import load_vl_model
from rl.warmstart import format_target, forward_after_prompt, letter_slot, response_loss


def test_a1_letter_target_is_uniform_over_the_options(tiny_qwen25, tmp_path):
    samples = generate_synthetic(tmp_path / "syn", 4, seed=0)  # choice, count, ground, grounded_qa
    builder = InputBuilder(str(tiny_qwen25), DataConfig(max_frames=8, total_pixels_tokens=64, max_pixels_tokens=16,
                                                        min_pixels_tokens=4))
    tok = builder.tokenizer
    rng = np.random.default_rng(0)
    by_type = {s.problem_type: s for s in samples}
    for kind in ("math", "iou"):
        target = tok(format_target(by_type[kind], rng), add_special_tokens=False)["input_ids"]
        assert letter_slot(tok, by_type[kind], target) is None, "only option letters are spread"

    choice = by_type["exact_match"]
    target = tok(format_target(choice, rng), add_special_tokens=False)["input_ids"]
    slot, letters = letter_slot(tok, choice, target)
    assert tok.convert_ids_to_tokens(letters) == list("ABCD"[: len(choice.options)])
    assert target[slot] in letters

    model = load_vl_model(tiny_qwen25, dtype=torch.float32).eval()
    mi = builder.build(choice)
    with torch.no_grad():
        plain = response_loss(model, mi, target)
        spread = response_loss(model, mi, target, spread=(slot, letters))
        logp = forward_after_prompt(model, mi, target).logits[0].log_softmax(-1)
    at_slot = logp[len(mi.prompt_ids) - 1 + slot]
    # The same mean over the target, except the slot's term: -log p(drawn letter) -> -mean log p(each letter).
    expected = plain + (at_slot[target[slot]] - at_slot[letters].mean()) / len(target)
    assert torch.allclose(spread, expected, atol=1e-5), (float(spread), float(expected))
