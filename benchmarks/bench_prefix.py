"""Shared-prefix vs per-row learner round: seconds per phase, tokens per group, peak memory, exactness.

One learner rank (an in-process 1-rank DeepSpeed world) runs one GRPO round: old log-probs,
reference log-probs and one update, once with `learner.shared_prefix: false` (one row per response)
and once with `true` (one packed row per (sub)group), each in a fresh process so peak memory is
its own (peak RSS on CPU, peak allocated on GPU). The gradient of the update is read before it is
applied; log-probs and gradients of the two runs are compared. The GRPO loss of group-normalised
advantages is near 0 at ratio 1, so its relative difference says little: the absolute one is given
too. Wall seconds on a shared box swing with other work; the round's CPU seconds of the process
measure the work itself.

Shapes: `paper` (the tiny model at VideoAuto-R1's shape: a ~4,000-token prompt with ~3,600 video
tokens, G = 16 responses of ~150 tokens, spread 40..400) and `demo` (configs/tiny_cpu.yaml: 4
prompts of 8 frames at 16 tokens per frame pair, G = 16, up to 48 new tokens, 2 steps).
Prints one JSON object.

    .venv/bin/python benchmarks/bench_prefix.py [--shape paper|demo] [--family qwen2_5_vl|qwen3_vl]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
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
from rl.types import Clip, Sample  # noqa: E402

SHAPES = {
    # frames, merged tokens per frame pair (h, w), question words, prompts, G, response lengths, steps, budget, checkpointing
    "paper": dict(frames=120, grid=(6, 10), words=100, prompts=1, group=16, response=(150, 60, 40, 400), steps=1,
                  budget=16384, checkpointing=True),
    "demo": dict(frames=8, grid=(4, 4), words=20, prompts=4, group=16, response=(30, 12, 4, 48), steps=2,
                 budget=8192, checkpointing=False),
}


def make_round(model_dir: Path, shape: dict, seed: int = 0):
    """`prompts` video prompts x G responses (random tokens; lengths ~ normal(mean, std) clipped to [lo, hi])."""
    renderer = PromptRenderer(str(model_dir))
    f = 28 if renderer.family == "qwen2_5_vl" else 32
    rng = np.random.default_rng(seed)
    h, w = shape["grid"]
    words = " ".join(["the red square moves left"] * (shape["words"] // 5))
    sample = Sample(id="b", source="bench", problem_type="exact_match", question=f"{words}. What moves?\nA. a\nB. b",
                    answer="A", media_kind="video")
    rendered = []
    n = shape["frames"]
    for _ in range(shape["prompts"]):
        frames = rng.integers(0, 255, (n, h * f, w * f, 3), dtype=np.uint8)
        clip = Clip(frames=frames, indices=list(range(0, 2 * n, 2)), video_fps=4.0, total_frames=2 * n, duration=n / 2, sample_fps=2.0)
        rendered.append(renderer.render(sample, clip))
    inputs = [mi for mi in rendered for _ in range(shape["group"])]
    mean, std, lo, hi = shape["response"]
    lengths = np.clip(rng.normal(mean, std, len(inputs)).round(), lo, hi).astype(int)
    responses = [rng.integers(10, 600, n).tolist() for n in lengths]
    advantages = group_advantages(torch.tensor(rng.random(len(inputs))), shape["group"]).advantages.tolist()
    return inputs, responses, advantages


def _peak_memory_bytes() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_round(model_dir: str, shape_name: str, shared: bool, device: str, queue) -> None:
    """Child process: a 1-rank Learner runs one round; puts timings, tokens, log-probs and the gradient."""
    from deepspeed.utils import safe_get_full_grad

    from learner.batch import Sequence
    from learner.prefix import prompt_groups
    from learner.worker import Learner, distributed_env, free_port

    configure_environment(device)
    os.environ.update(distributed_env(0, 1, "127.0.0.1", free_port()))
    shape = SHAPES[shape_name]
    cfg = Config.model_validate({
        "model": {"path": model_dir},
        "learner": {"zero_stage": 2, "micro_batch_tokens": shape["budget"], "shared_prefix": shared,
                    "gradient_checkpointing": shape["checkpointing"], "lr": 1e-6},
        "rollout": {"n": shape["group"], "temperature": 1.0},
        "cluster": {"device": device},
    })
    learner = Learner(cfg)
    inputs, responses, advantages = make_round(Path(model_dir), shape)
    learner.logprobs(inputs[:1], [responses[0][:4]])  # warm-up: first-call allocations and lazy imports
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    grads: dict[str, np.ndarray] = {}
    step = learner.engine.step

    def capture_then_step():
        grads.update({n: safe_get_full_grad(p).float().cpu().numpy() for n, p in learner.module.named_parameters() if p.requires_grad})
        step()

    learner.engine.step = capture_then_step
    start = time.perf_counter()
    old = learner.logprobs(inputs, responses)
    seconds_logprobs_call = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    stats = learner.train_round(inputs, responses, advantages, num_steps=shape["steps"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu

    # Tokens the model runs over in one scoring pass (padding included), as the learner plans it.
    seqs = [Sequence(mi.prompt_ids, r, mi.hf_inputs) for mi, r in zip(inputs, responses)]
    plan = learner._plan(seqs, prompt_groups(inputs), list(range(len(seqs))))
    padded = sum(learner._collate(seqs, units).model_inputs["input_ids"].numel() for units, _ in plan)
    queue.put({
        "seconds": {
            "old_logprobs": stats["seconds_old_logprobs"],
            "ref_logprobs": stats["seconds_ref_logprobs"],
            "update": stats["seconds_train"],
            "round": wall,
        },
        "cpu_seconds_round": cpu,
        "seconds_logprobs_call": seconds_logprobs_call,
        "learner_tokens_per_group": padded / shape["prompts"],
        "micro_batches_per_pass": len(plan),
        "peak_memory_gib": _peak_memory_bytes() / 2**30,
        "loss": stats["loss"],
        "logprobs": old,
        "grads": grads,
    })


def run_mode(model_dir: Path, shape: str, shared: bool, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=one_round, args=(str(model_dir), shape, shared, device, queue))
    proc.start()
    try:
        result = queue.get(timeout=3600)
    finally:
        proc.join(timeout=120)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="paper")
    parser.add_argument("--family", choices=["qwen2_5_vl", "qwen3_vl"], default="qwen2_5_vl")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU)")
    args = parser.parse_args()
    configure_environment(args.device)
    from rl.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(args.family, Path(tmp) / "tiny")
        inputs, responses, _ = make_round(model_dir, SHAPES[args.shape])
        per_row = run_mode(model_dir, args.shape, False, args.device)
        shared = run_mode(model_dir, args.shape, True, args.device)

    logp_diff = max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(shared["logprobs"], per_row["logprobs"]))
    grad_rel = max(
        float(np.abs(shared["grads"][n] - g).max() / max(np.abs(g).max(), 1e-12)) for n, g in per_row["grads"].items()
    )
    strip = lambda r: {k: v for k, v in r.items() if k not in ("logprobs", "grads")}  # noqa: E731
    video_tokens = sum(1 for t in np.asarray(inputs[0].hf_inputs["mm_token_type_ids"]).reshape(-1) if t == 2)
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(json.dumps({
        "benchmark": "learner round, shared prefix vs per row (tiny model, 1 rank)",
        "shape": args.shape,
        "family": args.family,
        "round": {
            "prompts": SHAPES[args.shape]["prompts"], "group": SHAPES[args.shape]["group"],
            "prompt_tokens": len(inputs[0].prompt_ids), "video_tokens": video_tokens,
            "response_tokens_mean": float(np.mean([len(r) for r in responses])),
            "response_tokens_min_max": [min(len(r) for r in responses), max(len(r) for r in responses)],
            "steps": SHAPES[args.shape]["steps"], "micro_batch_tokens": SHAPES[args.shape]["budget"],
            "gradient_checkpointing": SHAPES[args.shape]["checkpointing"],
        },
        "per_row": strip(per_row),
        "shared": strip(shared),
        "speedup": {k: per_row["seconds"][k] / shared["seconds"][k] for k in per_row["seconds"]},
        "max_abs_logprob_diff": logp_diff,
        "max_rel_grad_diff": grad_rel,
        "speedup_cpu_seconds_round": per_row["cpu_seconds_round"] / shared["cpu_seconds_round"],
        "loss_abs_diff": abs(shared["loss"] - per_row["loss"]),
        "loss_rel_diff": abs(shared["loss"] - per_row["loss"]) / max(abs(per_row["loss"]), 1e-12),
        "machine": {"cpus": os.cpu_count(), "loadavg": load, "python": platform.python_version(), "torch": torch.__version__,
                    "device": args.device},
    }, indent=1))


if __name__ == "__main__":
    main()
