"""Seeded synthetic video tasks, one family per problem type, that tests, the demo and benchmarks run on.

Each video is a few seconds of flat coloured shapes on black (112x112, the smallest frame the
Qwen planners keep without upscaling at patch 14, 8 or 10 fps, H.264 through PyAV, a few KB).
Signals are simple and consistent so a tiny model can learn them from the sampled frames:

- exact_match: one shape for the whole video; "what colour" or "what shape", options A-D / A-C,
  laid out as TVBench's questions are (rl.prompts.choice_question).
- math: 1-5 squares for the whole video; count them all, or only the red ones among blue ones.
- iou: a red square visible during [s, e] (10 fps, so frame times are exact to one decimal);
  the question is the description to ground, as in Charades-STA.
- gqa: a square of one colour visible during [s, e]; answer {"answer": letter, "segment": [s, e]}
  (the question and options go into NExT-GQA's template at render time, rl.prompts).

Sample i depends only on (seed, i), so a larger `num_samples` extends a smaller set. Regenerating
with the same seed, kinds and option order leaves the videos already there untouched (a stamp file
records what they were made with): a start costs no re-encoding, and the files' size and mtime, which
the resume guard's dataset fingerprint reads, stay put. x264 runs single-threaded (deterministic).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from rl.data.files import jsonl_bytes
from rl.data.records import validate_sample
from rl.prompts import LETTERS, choice_question
from rl.types import Sample

SIZE = 112
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 240),
    "yellow": (240, 220, 30),
}
SHAPES = ("square", "circle", "triangle")
SOURCE = "synthetic"
JSONL_NAME = "samples.jsonl"
STAMP_NAME = ".generator.json"
GENERATOR = 1
"""Bump when `_task` or `encode_mp4` change what a sample's video holds: with an equal stamp, the
videos already written are trusted as they are."""


def _shape_mask(shape: str, cy: int, cx: int, radius: int) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    if shape == "square":
        return (abs(y - cy) <= radius) & (abs(x - cx) <= radius)
    if shape == "circle":
        return (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    # apex up: rows widen from the apex at cy - radius to the base at cy + radius
    return (y >= cy - radius) & (y <= cy + radius) & (abs(x - cx) <= (y - (cy - radius)) / 2)


def _canvas(frames: int) -> np.ndarray:
    return np.zeros((frames, SIZE, SIZE, 3), np.uint8)


def _grid_cells(rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
    """Centres of `count` distinct cells of a 3x3 grid, so shapes never overlap."""
    cells = rng.choice(9, size=count, replace=False)
    step = SIZE // 3
    return [(int(c) // 3 * step + step // 2, int(c) % 3 * step + step // 2) for c in cells]


def _multiple_choice(rng: np.random.Generator, choices: tuple[str, ...], correct: str,
                     shuffle: bool = True) -> tuple[list[str], str]:
    options = [str(c) for c in (rng.permutation(list(choices)) if shuffle else choices)]
    return options, LETTERS[options.index(correct)]


def _segment(rng: np.random.Generator, frames: int, fps: int) -> tuple[int, int]:
    """[first, end) frames of a visible span of at least one second, not the whole video."""
    min_len = fps
    first = int(rng.integers(0, frames - min_len))
    end = int(rng.integers(first + min_len, frames + 1))
    if first == 0 and end == frames:
        end -= fps // 2
    return first, end


def _task(kind: str, rng: np.random.Generator, shuffle_options: bool = True) -> tuple[np.ndarray, int, str, object, list[str] | None, str]:
    """(frames, fps, question, answer, options, problem_type) of one sample."""
    if kind == "colour":
        fps = int(rng.choice([8, 10]))
        frames = _canvas(int(rng.integers(2, 5)) * fps)
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        frames[:, _shape_mask(shape, SIZE // 2, SIZE // 2, 40)] = COLOURS[colour]
        options, letter = _multiple_choice(rng, tuple(COLOURS), colour, shuffle_options)
        return frames, fps, f"What colour is the {shape} in the video?", letter, options, "exact_match"
    if kind == "choice":
        fps = int(rng.choice([8, 10]))
        frames = _canvas(int(rng.integers(2, 5)) * fps)
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        cy, cx = (int(v) for v in rng.integers(36, SIZE - 36, size=2))
        frames[:, _shape_mask(shape, cy, cx, 18)] = COLOURS[colour]
        if rng.random() < 0.5:
            options, letter = _multiple_choice(rng, tuple(COLOURS), colour, shuffle_options)
            question = f"What colour is the {shape} in the video?"
        else:
            options, letter = _multiple_choice(rng, SHAPES, shape, shuffle_options)
            question = "What shape is shown in the video?"
        return frames, fps, question, letter, options, "exact_match"
    if kind == "count":
        fps = int(rng.choice([8, 10]))
        frames = _canvas(int(rng.integers(2, 5)) * fps)
        if rng.random() < 0.5:
            count = int(rng.integers(1, 6))
            for cy, cx in _grid_cells(rng, count):
                frames[:, _shape_mask("square", cy, cx, 9)] = (255, 255, 255)
            return frames, fps, "How many squares are in the video?", str(count), None, "math"
        red, blue = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        for i, (cy, cx) in enumerate(_grid_cells(rng, red + blue)):
            frames[:, _shape_mask("square", cy, cx, 9)] = COLOURS["red" if i < red else "blue"]
        return frames, fps, "How many red squares are in the video?", str(red), None, "math"
    fps = 10
    total = int(rng.integers(3, 7)) * fps
    frames = _canvas(total)
    first, end = _segment(rng, total, fps)
    segment = [round(first / fps, 1), round(end / fps, 1)]
    cy, cx = (int(v) for v in rng.integers(30, SIZE - 30, size=2))
    if kind == "ground":
        frames[first:end, _shape_mask("square", cy, cx, 16)] = COLOURS["red"]
        return frames, fps, "The red square is visible.", segment, None, "iou"
    colour = str(rng.choice(list(COLOURS)))
    frames[first:end, _shape_mask("square", cy, cx, 16)] = COLOURS[colour]
    options, letter = _multiple_choice(rng, tuple(COLOURS), colour)
    answer = {"answer": letter, "segment": segment}
    return frames, fps, "What colour is the square that appears?", answer, options, "gqa"


KINDS = ("choice", "count", "ground", "grounded_qa")
"""Sample i is of kind KINDS[i % 4], so any four consecutive samples cover every problem type."""
EXTRA_KINDS = ("colour",)
"""Not in the default mix: `colour`, the demo's easiest family (one large centred shape, "what colour", 4 options)."""


def chance(sample: Sample) -> float:
    """Accuracy of a uniform random well-formed answer, the floor the demo's accuracies are read against.

    exact_match, gqa (the letter): 1/options. math: 1 over the counts the question allows (1-5, or
    1-3 red squares). iou (IoU > 0.5, i.e. R@0.5): estimated over 2000 uniform random intervals of
    the video, seeded by the sample id, so it is reproducible.
    """
    if sample.problem_type in ("exact_match", "gqa"):
        return 1.0 / len(sample.options or ())
    if sample.problem_type == "math":
        return 1.0 / 3 if "red" in sample.question else 1.0 / 5
    duration = float(sample.duration or 1.0)
    s, e = (float(v) for v in sample.answer)  # type: ignore[union-attr]
    rng = np.random.default_rng([ord(c) for c in sample.id])
    ends = np.sort(rng.uniform(0.0, duration, size=(2000, 2)), axis=1)
    inter = np.clip(np.minimum(ends[:, 1], e) - np.maximum(ends[:, 0], s), 0.0, None)
    union = (ends[:, 1] - ends[:, 0]) + (e - s) - inter
    return float(np.mean(inter / union > 0.5))


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 mp4 bytes of (T, H, W, 3) uint8 frames; single-threaded x264, so the bytes are reproducible."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate_synthetic(out_dir: Union[str, os.PathLike], num_samples: int, seed: int,
                       kinds: Sequence[str] = KINDS, shuffle_options: bool = True) -> list[Sample]:
    """Write `num_samples` videos under out_dir/videos and their records to out_dir/samples.jsonl.

    Returns the samples with media paths joined to `out_dir`; the JSONL stores them relative to
    `out_dir`, so `load_dataset(out_dir / "samples.jsonl")` gives the same records.
    """
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    stamp_path = out / STAMP_NAME
    stamp = {"generator": GENERATOR, "seed": seed, "kinds": list(kinds), "shuffle_options": shuffle_options}
    trusted = stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp
    if not trusted:
        stamp_path.unlink(missing_ok=True)  # the videos are rewritten: none is trusted until all are
    samples = []
    for i in range(num_samples):
        kind = kinds[i % len(kinds)]
        rng = np.random.default_rng([seed, i])
        frames, fps, question, answer, options, problem_type = _task(kind, rng, shuffle_options)
        sample_id = f"{SOURCE}-{seed}-{i:05d}"
        path = out / "videos" / f"{sample_id}.mp4"
        if not (trusted and path.is_file() and path.stat().st_size > 0):
            _write_if_changed(path, encode_mp4(frames, fps))
        sample = Sample(
            id=sample_id,
            source=SOURCE,
            problem_type=problem_type,  # type: ignore[arg-type]
            question=choice_question(question, options) if problem_type == "exact_match" else question,
            answer=answer,  # type: ignore[arg-type]
            options=options,
            media_kind="video",
            media_path=str(path),
            duration=len(frames) / fps,
        )
        samples.append(validate_sample(sample, f"synthetic sample {i}"))
    _write_if_changed(out / JSONL_NAME, jsonl_bytes(samples, media_root=out))
    if not trusted:
        stamp_path.write_text(json.dumps(stamp))
    return samples
