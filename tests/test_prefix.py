"""The group-shared forward (learner.prefix) is exact: same log-probs, losses and gradients as one row per response.

Text, image and 8-frame video groups (8 frames: Qwen2.5-VL's text-after-video position rule of
rl.mrope differs from transformers' there, so a wrong position source shows) with spread response
lengths, on both families; through the model directly and through 1-rank in-process Learners at
ZeRO-2 and ZeRO-3 with gradient checkpointing on and off.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learner.batch import Sequence, collate, collate_shared, group_units, response_logprobs  # noqa: E402
from learner.prefix import prompt_groups  # noqa: E402
from learner.worker import Learner, distributed_env, free_port  # noqa: E402
from rl.config import Config  # noqa: E402
from rl.mrope import load_vl_model  # noqa: E402
from rl.render import PromptRenderer  # noqa: E402
from rl.types import Clip, ModelInput, Sample  # noqa: E402

LOGP_ATOL = 1e-5
LOSS_RTOL = 1e-6
GRAD_RTOL = 1e-5
RESPONSES = (5, 3, 4)
"""Responses per prompt: video, image, text."""


def _clip(patch: int, frames: int, seed: int) -> Clip:
    f = 2 * patch
    pixels = np.random.default_rng(seed).integers(0, 255, (frames, f, 2 * f, 3), dtype=np.uint8)
    return Clip(frames=pixels, indices=list(range(0, 2 * frames, 2)), video_fps=4.0, total_frames=2 * frames,
                duration=frames / 2, sample_fps=2.0)


def make_prompts(model_dir: Path) -> list[ModelInput]:
    """An 8-frame video, an image and a text prompt."""
    renderer = PromptRenderer(str(model_dir))
    patch = 14 if renderer.family == "qwen2_5_vl" else 16
    question = "What moves?\nA. a\nB. b"
    video = renderer.render(Sample(id="v", source="test", problem_type="exact_match", question=question, answer="A", media_kind="video"),
                            _clip(patch, 8, seed=1))
    image_pixels = np.random.default_rng(2).integers(0, 255, (4 * patch, 6 * patch, 3), dtype=np.uint8)
    image = renderer.render(Sample(id="i", source="test", problem_type="exact_match", question=question, answer="B", media_kind="image"),
                            image=image_pixels)
    text = renderer.render(Sample(id="t", source="test", problem_type="math", question="1+1?", answer="2"))
    return [video, image, text]


def make_round(model_dir: Path) -> tuple[list[ModelInput], list[list[int]], list[float]]:
    """Each prompt's responses as consecutive samples sharing one ModelInput object; lengths spread 3..40."""
    rng = np.random.default_rng(0)
    inputs, responses = [], []
    for prompt, k in zip(make_prompts(model_dir), RESPONSES):
        for _ in range(k):
            inputs.append(prompt)
            responses.append(rng.integers(10, 600, int(rng.integers(3, 40))).tolist())
    advantages = rng.normal(size=len(inputs)).tolist()
    return inputs, responses, advantages


def _units() -> list[list[int]]:
    """The video group split into two sub-groups (each carries the prompt), image and text whole."""
    v, i, t = RESPONSES
    return [list(range(0, 3)), list(range(3, v)), list(range(v, v + i)), list(range(v + i, v + i + t))]


# ---- pure pieces ----------------------------------------------------------------------------


def test_groups_split_into_subgroups_that_fit_the_budget():
    groups = [7, 7, 7, 3, 7, 3]
    prompts = [100, 100, 100, 50, 100, 50]
    responses = [40, 30, 50, 10, 20, 5]
    units = group_units(groups, prompts, responses, token_budget=180)
    assert units == [[0, 1], [2, 4], [3, 5]]
    assert all(prompts[u[0]] + sum(responses[i] for i in u) <= 180 for u in units)
    assert group_units(groups, prompts, responses, token_budget=10) == [[0], [1], [2], [4], [3], [5]]


def test_prompt_groups_by_identity_then_content(tiny_qwen25):
    video, image, text = make_prompts(tiny_qwen25)
    twin = copy.deepcopy(video)
    other_pixels = copy.deepcopy(video)
    key = next(k for k in other_pixels.hf_inputs if k.startswith("pixel_values"))
    other_pixels.hf_inputs[key] = other_pixels.hf_inputs[key] + 1.0  # same prompt ids, another video
    assert prompt_groups([video, image, video, twin, other_pixels, text, image]) == [0, 1, 0, 0, 2, 3, 1]


# ---- the model directly -----------------------------------------------------------------------


def _sequences(model_dir: Path) -> list[Sequence]:
    inputs, responses, advantages = make_round(model_dir)
    return [Sequence(mi.prompt_ids, r, mi.hf_inputs, a) for mi, r, a in zip(inputs, responses, advantages)]


def _grads(model, mb, weights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    scores = response_logprobs(model, mb, temperature=0.7, with_entropy=True)
    (scores.logp * weights).sum().backward()
    return scores, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        scale = want[name].abs().max().clamp(min=1e-12)
        assert (got[name] - want[name]).abs().max() <= GRAD_RTOL * scale, name


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_shared_forward_matches_per_row(family, tiny_qwen25, tiny_qwen3):
    """Four packed rows of different lengths (padding) vs 12 rows: log-probs, entropies and every gradient."""
    model_dir = tiny_qwen25 if family == "qwen2_5_vl" else tiny_qwen3
    seqs = _sequences(model_dir)
    model = load_vl_model(model_dir, attn_implementation="sdpa", dtype=torch.float32).eval()
    per_row = collate(seqs, pad_id=0)
    shared = collate_shared(seqs, _units(), pad_id=0)
    assert shared.model_inputs["input_ids"].numel() < per_row.model_inputs["input_ids"].numel() / 2
    weights = torch.randn(per_row.mask.shape, generator=torch.Generator().manual_seed(0)) * per_row.mask

    want, want_grads = _grads(model, per_row, weights)
    got, got_grads = _grads(model, shared, weights)
    assert (got.logp - want.logp).abs().max() <= LOGP_ATOL
    assert (got.entropy - want.entropy).abs().max() <= LOGP_ATOL
    _assert_grads_close(got_grads, want_grads)
    assert any(n.startswith("model.visual.") for n in want_grads)

    # The comparison is sharp: a response that sees the others, or positions that do not continue
    # the prompt's, change the log-probs far beyond the tolerance.
    with torch.no_grad():
        leaky = copy.deepcopy(shared)
        leaky.packing.segments[leaky.packing.segments > 0] = 0
        assert (response_logprobs(model, leaky, 0.7).logp - want.logp).abs().max() > 100 * LOGP_ATOL
        shifted = copy.deepcopy(shared)
        shifted.packing.rope_index[shifted.packing.segments > 0] -= 1
        assert (response_logprobs(model, shifted, 0.7).logp - want.logp).abs().max() > 100 * LOGP_ATOL


def test_flash_attention_is_refused_with_a_clear_message(tiny_qwen25):
    seqs = _sequences(tiny_qwen25)
    model = load_vl_model(tiny_qwen25, attn_implementation="sdpa")
    model.config.get_text_config()._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="shared_prefix"):
        response_logprobs(model, collate_shared(seqs, _units(), pad_id=0))


# ---- 1-rank learners, in process -------------------------------------------------------------


@pytest.fixture(scope="module")
def one_rank_world():
    os.environ.update(distributed_env(0, 1, "127.0.0.1", free_port()))


def _learner_round(model_dir: Path, shared: bool, stage: int, checkpointing: bool, budget: int):
    """Old log-probs, then a 2-step round; the full gradient of each step is read before it is applied."""
    from deepspeed.utils import safe_get_full_grad

    cfg = Config.model_validate({
        "model": {"path": str(model_dir)},
        "learner": {"lr": 1e-6, "zero_stage": stage, "gradient_checkpointing": checkpointing,
                    "micro_batch_tokens": budget, "shared_prefix": shared},
        "rollout": {"n": 4, "temperature": 0.7},
        "cluster": {"device": "cpu"},
    })
    learner = Learner(cfg)
    inputs, responses, advantages = make_round(model_dir)
    logprobs = learner.logprobs(inputs, responses)
    grads: list[dict[str, torch.Tensor]] = []
    step = learner.engine.step

    def capture_then_step():
        grads.append({n: safe_get_full_grad(p).clone() for n, p in learner.module.named_parameters() if p.requires_grad})
        step()

    learner.engine.step = capture_then_step
    # 12 samples in 2 steps of 6: the image group straddles the steps, as with a shuffled make-up.
    stats = learner.train_round(inputs, responses, advantages, num_steps=2)
    del learner
    return logprobs, stats, grads


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,stage,checkpointing",
    [("qwen2_5_vl", 2, False), ("qwen2_5_vl", 3, True), ("qwen3_vl", 2, True), ("qwen3_vl", 3, False)],
)
def test_learner_round_matches_per_row(one_rank_world, tiny_qwen25, tiny_qwen3, family, stage, checkpointing):
    model_dir = tiny_qwen25 if family == "qwen2_5_vl" else tiny_qwen3
    video_prompt = len(make_prompts(model_dir)[0].prompt_ids)
    budget = video_prompt + 80  # the video group needs two sub-groups, micro-batches hold several rows
    want_lp, want, want_grads = _learner_round(model_dir, False, stage, checkpointing, budget)
    got_lp, got, got_grads = _learner_round(model_dir, True, stage, checkpointing, budget)
    for a, b in zip(got_lp, want_lp):
        assert np.abs(np.array(a) - np.array(b)).max() <= LOGP_ATOL
    assert got["steps_applied"] == want["steps_applied"] == 2
    for g, w in zip(got["per_step"], want["per_step"]):
        assert g["loss"] == pytest.approx(w["loss"], rel=LOSS_RTOL, abs=1e-9)
        assert g["kl"] == pytest.approx(w["kl"], rel=1e-5, abs=1e-9)
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=GRAD_RTOL)
        assert g["tokens"] == w["tokens"] and g["sequences"] == w["sequences"]
    assert len(got_grads) == len(want_grads) == 2
    for g, w in zip(got_grads, want_grads):
        _assert_grads_close(g, w)


# ---- two ranks, Ray actors, ZeRO-3 ------------------------------------------------------------


@pytest.mark.slow
def test_two_rank_zero3_round_matches_per_row(tiny_qwen3):
    """Rank 1's video group splits into two packed rows in two micro-batches, rank 0's fits one:
    rank 0 runs a zero-weight dummy to stay in step; losses, grad norms and log-probs match per-row."""
    import ray

    from learner.group import LearnerGroup

    video = make_prompts(tiny_qwen3)[0]
    other = PromptRenderer(str(tiny_qwen3)).render(
        Sample(id="w", source="test", problem_type="exact_match", question="Which colour?\nA. red\nB. blue", answer="B",
               media_kind="video"), _clip(16, 4, seed=3))
    rng = np.random.default_rng(1)
    inputs = [other] * 4 + [video] * 4
    lengths = (5, 9, 4, 7, 40, 35, 38, 30)
    responses = [rng.integers(10, 600, n).tolist() for n in lengths]
    advantages = rng.normal(size=8).tolist()
    budget = len(video.prompt_ids) + 80
    assert len(group_units([0] * 4, [len(video.prompt_ids)] * 4, list(lengths[4:]), budget)) == 2
    assert len(group_units([0] * 4, [len(other.prompt_ids)] * 4, list(lengths[:4]), budget)) == 1
    results = []
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        for shared in (False, True):
            cfg = Config.model_validate({
                "model": {"path": str(tiny_qwen3)},
                "learner": {"world_size": 2, "zero_stage": 3, "lr": 1e-6, "micro_batch_tokens": budget, "shared_prefix": shared},
                "trainer": {"prompts_per_round": 2, "steps_per_round": 1},
                "rollout": {"n": 4, "temperature": 0.7},
                "cluster": {"device": "cpu"},
            })
            group = LearnerGroup(cfg)
            try:
                results.append((group.logprobs(inputs, responses), group.train(inputs, responses, advantages, num_steps=1)))
            finally:
                group.shutdown()
    finally:
        ray.shutdown()
    (want_lp, want), (got_lp, got) = results
    for a, b in zip(got_lp, want_lp):
        assert np.abs(np.array(a) - np.array(b)).max() <= LOGP_ATOL
    g, w = got["per_step"][0], want["per_step"][0]
    assert g["loss"] == pytest.approx(w["loss"], rel=LOSS_RTOL, abs=1e-9)
    assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=GRAD_RTOL)
    assert g["tokens"] == w["tokens"] and g["sequences"] == w["sequences"] == 8


def test_learner_refuses_flash_attention_at_start(tiny_qwen25):
    """The 7B/8B configs' flash_attention_2 cannot take the prefix-sharing mask: say so before loading anything."""
    cfg = Config.model_validate({"model": {"path": str(tiny_qwen25), "attn_implementation": "flash_attention_2"},
                                 "cluster": {"device": "cpu"}})
    with pytest.raises(ValueError, match="shared_prefix"):
        Learner(cfg)
