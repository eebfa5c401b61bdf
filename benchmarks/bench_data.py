"""The data phase at the paper's video budget: serial prompt building in the driver vs builder actors.

Generates (at run time, nothing committed) one long H.264 video with PyAV, by default 2 minutes at
1280x720 and 30 fps, and exposes it under `--clips` file names (hard links: distinct paths, so
no clip cache hit; the OS page cache holds the bytes either way, as it would for a hot dataset).
Each clip is one video prompt at the training budget (2 fps, 4..256 frames, 4096 video tokens,
tiny Qwen2.5-VL processor: the real processor's patching and token counts).

Prints JSON: seconds per prompt serially in this process (one InputBuilder, as the driver did, with
torch's threads: every core unless `--serial-threads`), twice: as the driver built before the
builders (`data.frame_resize=float`, qwen-vl-utils' resize) and with the same code the builders run
(the default uint8 resize); seconds per prompt through the pool; both speedups; the data seconds
left on a round's critical path when the round is prefetched while a learner phase of
`--learner-s` seconds runs (default: as long as the pool's build, i.e. the learner phase just
hides it); the uint8 resize's difference from the float one on one clip; MB of one video prompt
as pickled to a learner, before (float32 pixels, all through the driver) and now (the uint8
frames, which a learner fetches from the object store, and the part that passes through the
driver; the learner rebuilds the pixels, rl.pixels).

    python benchmarks/bench_data.py [--clips 16] [--builders 2] [--seconds 120] [--width 1280 --height 720]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.runtime import configure_environment  # noqa: E402

configure_environment("cpu")


def write_video(path: Path, seconds: float, width: int, height: int, fps: int) -> None:
    """A moving gradient with a square: cheap to encode, not trivial to decode."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(2 * fps)}
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
        for i in range(int(seconds * fps)):
            frame = np.empty((height, width, 3), dtype=np.uint8)
            frame[..., 0] = (x + 3 * i) % 256
            frame[..., 1] = (y + 2 * i) % 256
            frame[..., 2] = 128
            s = (i * 7) % (width - 64)
            frame[100:164, s:s + 64] = (255, 0, 0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--builders", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--learner-s", type=float, default=None, help="simulated learner phase (default: the pool's build time)")
    parser.add_argument("--serial-threads", type=int, default=None,
                        help="torch threads of the serial build (default: torch's, i.e. every core, as the driver had)")
    args = parser.parse_args()

    import numpy as np
    import ray

    from launch.builders import BuilderPool, RoundBuilder
    from learner.group import for_learner
    from rl.config import DataConfig
    from rl.inputs import InputBuilder
    from rl.pixels import with_media
    from rl.stream import PromptStream
    from rl.tiny import build_tiny
    from rl.types import Sample

    work = Path(tempfile.mkdtemp(prefix="bench_data-"))
    model_dir = Path("artifacts/bench/tiny-qwen2_5_vl")
    if not (model_dir / "model.safetensors").is_file():
        build_tiny("qwen2_5_vl", model_dir)
    started = time.perf_counter()
    source = work / "source.mp4"
    write_video(source, args.seconds, args.width, args.height, args.fps)
    generate_s = time.perf_counter() - started
    samples = []
    for i in range(args.clips):
        path = work / f"clip{i:03d}.mp4"
        os.link(source, path)
        samples.append(Sample(id=f"c{i}", source="bench", problem_type="exact_match", question="What moves?\nA. a\nB. b",
                              answer="A", media_kind="video", media_path=str(path)))
    data = DataConfig(video_cache_size=0)  # the paper's training budget

    import torch

    if args.serial_threads is not None:
        torch.set_num_threads(args.serial_threads)
    serial_threads = torch.get_num_threads()

    def build_serially(cfg: DataConfig) -> tuple[list, float]:
        builder = InputBuilder(str(model_dir), cfg)
        started = time.perf_counter()
        built = [builder.build(s) for s in samples]
        return built, time.perf_counter() - started

    serial_before, serial_before_s = build_serially(data.model_copy(update={"frame_resize": "float"}))
    serial, serial_s = build_serially(data)
    assert [b.prompt_ids for b in serial_before] == [s.prompt_ids for s in serial], "the resize changes pixels, not tokens"

    ray.init(num_cpus=max(args.builders, 2), include_dashboard=False, log_to_driver=False)
    try:
        pool = BuilderPool(str(model_dir), data, args.builders)
        stream = PromptStream(samples, shuffle=False)
        rounds = RoundBuilder(stream, None, pool, on_skip=lambda exc: None, max_skips=0)
        started = time.perf_counter()
        built = rounds.next_round(args.clips)
        pool_s = time.perf_counter() - started
        assert [b.prompt_ids for b in built] == [s.prompt_ids for s in serial], "the pool must build what the driver builds"

        stream.samples_consumed = 0
        rounds = RoundBuilder(stream, None, pool, on_skip=lambda exc: None, max_skips=0)
        learner_s = pool_s if args.learner_s is None else args.learner_s
        rounds.prefetch(args.clips, depth=1)
        time.sleep(learner_s)  # round t's learner phase: the driver waits, the builders work
        started = time.perf_counter()
        rounds.next_round(args.clips)
        critical_s = time.perf_counter() - started
        # What a learner rank gets: the prompt from the driver, its frames from the object store.
        header = dataclasses.replace(for_learner([built[0]])[0], mm_ref=None)
        after_header_mb = len(pickle.dumps(header)) / 2**20
        after_mb = len(pickle.dumps(with_media(for_learner([built[0]]))[0])) / 2**20
        pool.shutdown()
    finally:
        ray.shutdown()

    before = dataclasses.replace(serial_before[0], mm_data={})  # what a learner got before: float pixels, no frames
    frame_diff = np.abs(serial_before[0].mm_data["video"][0].astype(np.int16) - serial[0].mm_data["video"][0].astype(np.int16))
    print(json.dumps({
        "clips": args.clips, "video": f"{args.seconds:g}s {args.width}x{args.height} {args.fps}fps", "builders": args.builders,
        "frames_per_prompt": int(serial[0].mm_data["video"][0].shape[0]), "prompt_tokens": len(serial[0].prompt_ids),
        "generate_video_s": round(generate_s, 1),
        "serial_torch_threads": serial_threads,
        "serial_before_s_per_prompt": round(serial_before_s / args.clips, 3),
        "serial_s_per_prompt": round(serial_s / args.clips, 3),
        "pool_s_per_prompt": round(pool_s / args.clips, 3),
        "speedup_vs_before": round(serial_before_s / pool_s, 2), "speedup_vs_serial": round(serial_s / pool_s, 2),
        "uint8_vs_float_resize": {"mean_abs": round(float(frame_diff.mean()), 4),
                                  "frac_differing": round(float((frame_diff > 0).mean()), 4), "max": int(frame_diff.max())},
        "prefetched_round": {"learner_phase_s": round(learner_s, 2), "data_s_on_critical_path": round(critical_s, 3)},
        "mb_per_video_prompt_to_learner": {
            "before_float_pixels": round(len(pickle.dumps(before)) / 2**20, 2),
            "before_with_frames_through_driver": round(len(pickle.dumps(serial_before[0])) / 2**20, 2),
            "after_uint8_frames": round(after_mb, 2),
            "after_through_driver": round(after_header_mb, 3),
        },
    }))


if __name__ == "__main__":
    main()
