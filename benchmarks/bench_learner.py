"""Learner throughput on the tiny model: seconds per 1k trained tokens, 1 and 2 ranks (Ray + DeepSpeed, CPU).

A round is `--prompts` video prompts x `--group` responses of `--response-tokens` tokens, trained
as `--steps` optimizer steps. After one warm-up round, `--rounds` rounds are timed; per phase
(old log-probs, reference log-probs, updates) and for the whole round as the driver sees it.
Prints one JSON object.

    .venv/bin/python benchmarks/bench_learner.py [--family qwen2_5_vl] [--zero 2] [--ranks 1 2]

`--load-rss` measures instead the host memory each rank takes to start under ZeRO-3 (policy and
reference loaded, DeepSpeed engines built) for each world size in `--ranks`, on a tiny model scaled
up to `--hidden` x `--layers` so the model outweighs the process's fixed costs. Ranks are plain
processes in one gloo world (the learner actor's code path without Ray). Per rank: the peak over
the start of anonymous memory (RssAnon, sampled every 5 ms: what the rank holds) and of the whole
RSS (VmRSS, which also counts pages of the mmap'd checkpoint file that the loading rank touches:
page cache, shared and reclaimable).

    .venv/bin/python benchmarks/bench_learner.py --load-rss [--ranks 1 2] [--hidden 1024] [--layers 8]
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
from rl.render import PromptRenderer  # noqa: E402
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


def _memory_mb() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def _load_rank(rank: int, world: int, port: int, model_dir: str, queue) -> None:
    """One rank: imports first (not the model's cost), then the learner's start, with memory sampled."""
    import threading

    from learner.worker import Learner, distributed_env
    from rl.mrope import load_vl_model  # noqa: F401  (import cost outside the measurement)

    os.environ.update(distributed_env(rank, world, "127.0.0.1", port))
    configure_environment("cpu")
    import deepspeed  # noqa: F401
    import transformers  # noqa: F401

    start = _memory_mb()
    peak = dict(start)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            now = _memory_mb()
            for key in ("VmRSS", "RssAnon"):
                peak[key] = max(peak[key], now[key])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cfg = Config.model_validate({
        "model": {"path": model_dir}, "learner": {"world_size": world, "zero_stage": 3, "gradient_checkpointing": False},
        "grpo": {"kl_coef": 0.01}, "trainer": {"prompts_per_round": 2, "steps_per_round": 1}, "cluster": {"device": "cpu"},
    })
    started = time.perf_counter()
    learner = Learner(cfg, model_dir)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    assert learner.ref is not None
    queue.put({"rank": rank, "start_s": round(seconds, 1),
               "peak_anon_over_start_mb": round(peak["RssAnon"] - start["RssAnon"], 1),
               "peak_rss_over_start_mb": round(peak["VmRSS"] - start["VmRSS"], 1)})
    import torch.distributed as dist

    dist.barrier()


def load_rss(family: str, ranks_list: tuple[int, ...], hidden: int, layers: int) -> dict:
    """Peak host memory per rank while the ZeRO-3 learner starts, for each world size."""
    import multiprocessing as mp

    from rl.weight_sync.broadcast import free_port

    results: dict = {"benchmark": "ZeRO-3 learner start: peak host memory per rank (CPU, gloo)", "family": family,
                     "machine": {"cpus": os.cpu_count(), "torch": torch.__version__}, "ranks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(family, Path(tmp) / "tiny", hidden=hidden, layers=layers)
        results["model"] = {"hidden": hidden, "layers": layers,
                            "fp32_mb": round(sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20, 1),
                            "copies": "policy + reference"}
        ctx = mp.get_context("spawn")
        for world in ranks_list:
            queue, port = ctx.Queue(), free_port()
            procs = [ctx.Process(target=_load_rank, args=(r, world, port, str(model_dir), queue)) for r in range(world)]
            for proc in procs:
                proc.start()
            ranks = sorted((queue.get(timeout=1800) for _ in procs), key=lambda r: r["rank"])
            for proc in procs:
                proc.join(timeout=120)
            results["ranks"][str(world)] = ranks
    if "1" in results["ranks"] and "2" in results["ranks"]:
        for key in ("peak_anon_over_start_mb", "peak_rss_over_start_mb"):
            one = results["ranks"]["1"][0][key]
            results[f"ratio_2_ranks_to_1_{key}"] = round(max(r[key] for r in results["ranks"]["2"]) / one, 3)
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
    parser.add_argument("--load-rss", action="store_true", help="measure peak host memory per rank at the ZeRO-3 start instead")
    parser.add_argument("--hidden", type=int, default=1024, help="--load-rss: the scaled-up tiny model's hidden size")
    parser.add_argument("--layers", type=int, default=8, help="--load-rss: its number of layers")
    args = parser.parse_args()
    if args.load_rss:
        configure_environment("cpu")
        print(json.dumps(load_rss(args.family, tuple(args.ranks), args.hidden, args.layers)))
        return
    print(json.dumps(run(args.family, args.zero, tuple(args.ranks), args.prompts, args.group, args.response_tokens,
                         args.steps, args.rounds, args.micro_batch_tokens)))


if __name__ == "__main__":
    main()
