"""Learner ranks holding different modalities (text, image, video) stay in step: the paper's mixed stream.

Without the vision lockstep (learner.lockstep) a rank whose micro-batch lacks video skips the
vision tower while its peer gathers the tower's ZeRO-3 partitions or reduces the merger's ZeRO-2
gradients: gloo aborts with a collective mismatch (NCCL hangs). Here two real learner ranks (Ray
actors, DeepSpeed on gloo) train rounds whose steps put text on one rank and video or image on the
other, and the losses must equal a one-rank run of the same samples.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from learner.group import LearnerGroup, group_shards, shuffled_order
from learner.worker import Learner, distributed_env, free_port
from rl.config import Config
from rl.grpo import group_advantages
from rl.render import PromptRenderer
from rl.types import Clip, ModelInput, Sample

G = 2
STEPS = 3
SEED = 7


def _clip(patch: int, t: int, h: int, w: int, seed: int) -> Clip:
    f = 2 * patch
    frames = np.random.default_rng(seed).integers(0, 255, (t, h * f, w * f, 3), dtype=np.uint8)
    return Clip(frames=frames, indices=list(range(0, 2 * t, 2)), video_fps=4.0, total_frames=2 * t, duration=t / 2, sample_fps=2.0)


def _image(patch: int, h: int, w: int, seed: int) -> Image.Image:
    f = 2 * patch
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h * f, w * f, 3), dtype=np.uint8))


def mixed_round(model_dir) -> tuple[list[ModelInput], list[list[int]], list[float]]:
    """Six prompts x G responses; with 2 ranks and 3 steps, step by step rank 0 / rank 1 hold:
    text / video, image / text, video / image (grouped make-up)."""
    renderer = PromptRenderer(str(model_dir))
    patch = 14 if renderer.family == "qwen2_5_vl" else 16
    mc = dict(source="test", problem_type="exact_match", question="What is shown?\nA. a\nB. b", answer="A")
    text = lambda i: renderer.render(Sample(id=f"t{i}", source="test", problem_type="math", question=f"{i}+1?", answer=str(i + 1)))  # noqa: E731
    video = lambda i, t, h, w: renderer.render(Sample(id=f"v{i}", media_kind="video", **mc), clip=_clip(patch, t, h, w, seed=i))  # noqa: E731
    image = lambda i, h, w: renderer.render(Sample(id=f"i{i}", media_kind="image", **mc), image=_image(patch, h, w, seed=i))  # noqa: E731
    prompts = [text(0), video(1, 4, 1, 2), image(2, 2, 1), text(3), video(4, 2, 2, 1), image(5, 1, 1)]
    rng = np.random.default_rng(0)
    inputs = [p for p in prompts for _ in range(G)]
    responses = [rng.integers(10, 600, int(rng.integers(3, 20))).tolist() for _ in inputs]
    rewards = torch.tensor(rng.uniform(0, 3, len(inputs)), dtype=torch.float32)
    return inputs, responses, group_advantages(rewards, G).advantages.tolist()


def make_config(model_dir, world_size: int, stage: int, checkpointing: bool, minibatch: str, freeze_vision: bool = True) -> Config:
    return Config.model_validate({
        "model": {"path": str(model_dir)},
        "learner": {"lr": 1e-3, "micro_batch_tokens": 400, "world_size": world_size, "zero_stage": stage,
                    "gradient_checkpointing": checkpointing, "minibatch": minibatch, "freeze_vision": freeze_vision},
        "trainer": {"prompts_per_round": 6, "steps_per_round": STEPS, "seed": SEED},
        "rollout": {"n": G},
        "cluster": {"device": "cpu"},
    })


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def one_rank_world():
    os.environ.update(distributed_env(0, 1, "127.0.0.1", free_port()))


def test_whole_groups_balanced_for_scoring():
    groups = [[0, 1], [2, 3], [4, 5], [6, 7]]
    shards = group_shards(groups, [10, 40, 20, 30], 2)
    assert sorted(i for s in shards for i in s) == list(range(8))
    assert shards == [[0, 1, 2, 3], [4, 5, 6, 7]]  # LPT: 40+10 vs 30+20, every group whole
    assert group_shards([[0, 1, 2, 3]], [9], 2) == [[0, 1], [2, 3]]  # fewer groups than ranks: split
    with pytest.raises(ValueError, match="cannot feed"):
        group_shards([[0]], [1], 2)
    assert shuffled_order(16, 3) == shuffled_order(16, 3) != shuffled_order(16, 4)
    assert sorted(shuffled_order(16, 3)) == list(range(16))


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,stage,checkpointing,minibatch,freeze_vision",
    [
        ("qwen2_5_vl", 2, False, "grouped", True),
        ("qwen2_5_vl", 3, True, "shuffled", True),
        ("qwen3_vl", 3, False, "grouped", True),
        ("qwen2_5_vl", 3, True, "grouped", False),
        ("qwen3_vl", 3, False, "grouped", False),
    ],
    ids=["qwen2_5_vl-zero2", "qwen2_5_vl-zero3-ckpt-shuffled", "qwen3_vl-zero3",
         "qwen2_5_vl-zero3-ckpt-trainable-vision", "qwen3_vl-zero3-trainable-vision"],
)
def test_two_ranks_with_different_modalities_match_one_rank(
    ray_cluster, one_rank_world, tiny_qwen25, tiny_qwen3, family, stage, checkpointing, minibatch, freeze_vision
):
    model_dir = tiny_qwen25 if family == "qwen2_5_vl" else tiny_qwen3
    inputs, responses, advantages = mixed_round(model_dir)

    group = LearnerGroup(make_config(model_dir, 2, stage, checkpointing, minibatch, freeze_vision))
    try:
        two = group.train(inputs, responses, advantages, seed=SEED)
    finally:
        group.shutdown()

    # The same samples in the same steps on one in-process rank.
    order = shuffled_order(len(inputs), SEED) if minibatch == "shuffled" else list(range(len(inputs)))
    learner = Learner(make_config(model_dir, 1, stage, checkpointing, "grouped", freeze_vision))
    one = learner.train_round([inputs[i] for i in order], [responses[i] for i in order], [advantages[i] for i in order], num_steps=STEPS)
    del learner

    assert two["steps_applied"] == STEPS and not two["nonfinite_loss"]
    for a, b in zip(two["per_step"], one["per_step"]):
        for key in ("loss", "pg_loss", "kl"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["sequences"] == b["sequences"] and a["tokens"] == b["tokens"]
    assert two["per_step"][-1]["kl"] > 0  # the reference ran too, and the policy moved
