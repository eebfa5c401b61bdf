"""Decode + plan + resize throughput on the real fixture videos and on synthetic ones.

Each sample is requested `--copies` times (G = 16 copies of a prompt in GRPO), once without a
cache (every copy decodes) and once through `VideoLoader` (one decode, the rest hits). Prints one
JSON object: per set, seconds, decodes, clips (samples) per second and frames per second delivered.

    .venv/bin/python benchmarks/bench_video.py [--copies 16] [--synthetic 16] [--patch 14]
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
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.config import DataConfig  # noqa: E402
from rl.data.synthetic import generate_synthetic  # noqa: E402
from rl.data.video import VideoLoader, VideoSampling, decode_clip, probe_video  # noqa: E402
from rl.types import Clip  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "videos"


def _run(paths: list[Path], copies: int, load: Callable[[Path], Clip]) -> dict:
    frames = 0
    start = time.perf_counter()
    for path in paths:
        for _ in range(copies):
            frames += len(load(path).indices)
    seconds = time.perf_counter() - start
    clips = len(paths) * copies
    return {
        "seconds": round(seconds, 4),
        "samples_per_s": round(clips / seconds, 2),
        "frames_per_s": round(frames / seconds, 1),
    }


def bench(paths: list[Path], sampling: VideoSampling, copies: int) -> dict:
    first = decode_clip(paths[0], sampling)
    meta = probe_video(paths[0])
    uncached = _run(paths, copies, lambda p: decode_clip(p, sampling))
    uncached["decodes"] = len(paths) * copies
    loader = VideoLoader(sampling, cache_size=max(64, len(paths)))
    cached = _run(paths, copies, loader.load)
    cached["decodes"] = loader.decodes
    return {
        "videos": len(paths),
        "source": f"{meta.width}x{meta.height} @ {meta.fps:.2f} fps, {meta.total_frames} frames",
        "clip": list(first.frames.shape),
        "uncached": uncached,
        "cached": cached,
        "speedup": round(uncached["seconds"] / cached["seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--synthetic", type=int, default=16)
    parser.add_argument("--patch", type=int, default=14)
    args = parser.parse_args()
    sampling = VideoSampling.from_config(DataConfig(), patch_size=args.patch)
    results: dict = {
        "benchmark": "video decode+plan+resize",
        "copies_per_sample": args.copies,
        "sampling": sampling.__dict__,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
    }
    for path in sorted(FIXTURES.glob("*.mp4")):
        results[path.stem] = bench([path], sampling, args.copies)
    with tempfile.TemporaryDirectory() as tmp:
        samples = generate_synthetic(tmp, args.synthetic, seed=0)
        results["synthetic_112x112"] = bench([Path(s.media_path) for s in samples], sampling, args.copies)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
