"""Learner throughput on the tiny model: seconds per 1k trained tokens, 1 and 2 ranks (Ray + DeepSpeed, CPU).

A round is `--prompts` video prompts x `--group` responses of `--response-tokens` tokens, trained
as `--steps` optimizer steps. After one warm-up round, `--rounds` rounds are timed; per phase
(old log-probs, reference log-probs, updates) and for the whole round as the driver sees it.
Prints one JSON object.

    .venv/bin/python benchmarks/bench_learner.py [--family qwen2_5_vl] [--zero 2] [--ranks 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.config import Config  # noqa: E402
from rl.grpo import group_advantages  # noqa: E402
from rl.prompts import PromptRenderer  # noqa: E402
from rl.runtime import configure_environment  # noqa: E402
from rl.tiny import build_tiny  # noqa: E402
from rl.types import Clip, Sample  # noqa: E402


def make_round(model_dir: Path, prompts: int, group: int, response_tokens: int):
    renderer = PromptRenderer(str(model_dir))
    f = 28 if renderer.family == "qwen2_5_vl" else 32
    rng = np.random.default_rng(0)
    sample = Sample(id="b", source="bench", problem_type="exact_match", question="What moves?\nA. a\nB. b", answer="A", media_kind="video")
    rendered = []
    for _ in range(prompts):
        frames = rng.integers(0, 255, (4, 2 * f, 2 * f, 3), dtype=np.uint8)
        clip = Clip(frames=frames, indices=[0, 2, 4, 6], video_fps=4.0, total_frames=8, duration=2.0, sample_fps=2.0)
        rendered.append(renderer.render(sample, clip))
    inputs = [mi for mi in rendered for _ in range(group)]
    responses = [rng.integers(10, 600, response_tokens).tolist() for _ in inputs]
    advantages = group_advantages(torch.tensor(rng.random(len(inputs))), group).advantages.tolist()
    return inputs, responses, advantages


def bench(cfg: Config, model_dir: Path, data, rounds: int) -> dict:
    from learner.group import LearnerGroup

    inputs, responses, advantages = data
    start = time.perf_counter()
    group = LearnerGroup(cfg, model_dir=str(model_dir))
    startup = time.perf_counter() - start
    try:
        group.train(inputs, responses, advantages)
        phases = {"seconds_old_logprobs": 0.0, "seconds_ref_logprobs": 0.0, "seconds_train": 0.0}
        tokens = 0.0
        start = time.perf_counter()
        for _ in range(rounds):
            stats = group.train(inputs, responses, advantages)
            for key in phases:
                phases[key] += stats[key]
            tokens += stats["tokens"]
        wall = time.perf_counter() - start
    finally:
        group.shutdown()
    prompt_tokens = sum(len(mi.prompt_ids) for mi in inputs) * rounds
    per_1k = lambda seconds: round(seconds / tokens * 1000, 4)  # noqa: E731
    return {
        "startup_s": round(startup, 2),
        "response_tokens_per_round": tokens / rounds,
        "prompt_tokens_per_round": prompt_tokens / rounds,
        "s_per_1k_response_tokens": {
            "round_wall": per_1k(wall),
            "old_logprobs": per_1k(phases["seconds_old_logprobs"]),
            "ref_logprobs": per_1k(phases["seconds_ref_logprobs"]),
            "updates": per_1k(phases["seconds_train"]),
        },
        "s_per_1k_prompt_plus_response_tokens": round(wall / (tokens + prompt_tokens) * 1000, 4),
    }


def run(family: str = "qwen2_5_vl", zero: int = 2, ranks_list: tuple[int, ...] = (1, 2), prompts: int = 2, group: int = 8,
        response_tokens: int = 64, steps: int = 2, rounds: int = 3, micro_batch_tokens: int = 4096) -> dict:
    """The figures for each learner world size in `ranks_list` (starts and stops its own local Ray)."""
    configure_environment("cpu")
    import ray

    results: dict = {
        "benchmark": "learner GRPO round (tiny model, CPU, gloo)",
        "family": family,
        "zero_stage": zero,
        "round": {"prompts": prompts, "group": group, "response_tokens": response_tokens, "steps": steps},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "ranks": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(family, Path(tmp) / "tiny")
        data = make_round(model_dir, prompts, group, response_tokens)
        ray.init(num_cpus=max(ranks_list) + 2, include_dashboard=False, log_to_driver=False)
        try:
            for ranks in ranks_list:
                cfg = Config.model_validate(
                    {
                        "model": {"path": str(model_dir)},
                        "learner": {"world_size": ranks, "zero_stage": zero, "micro_batch_tokens": micro_batch_tokens},
                        "trainer": {"prompts_per_round": prompts, "steps_per_round": steps},
                        "rollout": {"n": group},
                        "cluster": {"device": "cpu"},
                    }
                )
                results["ranks"][str(ranks)] = bench(cfg, model_dir, data, rounds)
        finally:
            ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
    parser.add_argument("--zero", type=int, default=2, choices=[2, 3])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--response-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    args = parser.parse_args()
    print(json.dumps(run(args.family, args.zero, tuple(args.ranks), args.prompts, args.group, args.response_tokens,
                         args.steps, args.rounds, args.micro_batch_tokens)))


if __name__ == "__main__":
    main()
