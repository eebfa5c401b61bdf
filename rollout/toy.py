"""Toy video prompts and a tiny model that is confident on part of them, for tests and benchmarks.

Early exit only ever exits when a1 is confident, which a random tiny model never is. A few quick
supervised steps teach the format `\\boxed{a}<think>...</think>\\boxed{a}` with a fixed answer
for "colour" questions (the model becomes confident: it exits) and a random digit for "count"
questions (it stays unsure: it thinks). Frames are random numpy arrays, so no decoder is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rl.family import model_family
from rl.mrope import load_vl_model
from rl.prompts import Prompts
from rl.render import PromptRenderer
from rl.tiny import build_tiny
from rl.types import Clip, ModelInput, Sample
from rl.warmstart import response_loss, save_model_dir

SURE_QUESTION = "What colour is the square?"
SURE_OPTIONS = ["red", "green", "blue", "yellow"]
SURE_ANSWER = "B"
UNSURE_QUESTION = "How many objects appear in the video?"
THOUGHT = "Let me look at the frames again. I see the video. The object is clear in the frames."


def toy_samples(count: int, *, sure_every: int = 2) -> list[Sample]:
    """`count` video samples; every `sure_every`-th is a colour question (the model's sure kind)."""
    samples = []
    for i in range(count):
        if i % sure_every == 0:
            samples.append(Sample(id=f"sure-{i}", source="toy", problem_type="exact_match", question=SURE_QUESTION,
                                  answer=SURE_ANSWER, options=SURE_OPTIONS, media_kind="video", media_path=f"toy-{i}.mp4"))
        else:
            samples.append(Sample(id=f"unsure-{i}", source="toy", problem_type="exact_match", question=UNSURE_QUESTION,
                                  answer=str(i % 6), media_kind="video", media_path=f"toy-{i}.mp4"))
    return samples


def toy_clip(family: str, seed: int, frames: int = 4, units: tuple[int, int] = (2, 3)) -> Clip:
    """Random frames of `units` (rows, cols) merge units, sides multiples of 2 * patch.

    A clip costs frames / 2 * rows * cols video tokens: 12 by default.
    """
    unit = 28 if family == "qwen2_5_vl" else 32
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(frames, units[0] * unit, units[1] * unit, 3), dtype=np.uint8)
    indices = list(range(0, 2 * frames, 2))
    return Clip(frames=pixels, indices=indices, video_fps=4.0, total_frames=2 * frames, duration=frames / 2.0, sample_fps=2.0)


def toy_inputs(model_dir: str | Path, samples: list[Sample], *, seed: int = 0, frames: int = 4,
               units: tuple[int, int] = (2, 3)) -> list[ModelInput]:
    """Rendered prompts, one random clip per sample (seeded by position)."""
    renderer = PromptRenderer(str(model_dir), Prompts.official(False))  # an inference fixture: the evaluation prompts
    return [renderer.render(s, toy_clip(renderer.family, seed + i, frames, units)) for i, s in enumerate(samples)]


def toy_target(sample: Sample, rng: np.random.Generator) -> str:
    answer = SURE_ANSWER if sample.question == SURE_QUESTION else str(int(rng.integers(0, 6)))
    return f"\\boxed{{{answer}}}<think>{THOUGHT}</think>\\boxed{{{answer}}}"


def build_confident_model(base_dir: str | Path, out_dir: str | Path, *, steps: int = 300, lr: float = 5e-3,
                          seed: int = 0, num_prompts: int = 16) -> Path:
    """Supervised steps on toy targets (loss on the response only); saved as an HF model dir.

    Each step takes one sure and one unsure prompt, so the gradient contrasts the two kinds; 300
    steps (10-30 s on 2 cores) give a1 probability ~0.998 on sure prompts and ~0.3 on unsure ones.
    Reuses `out_dir` when it was built with the same settings.
    """
    out = Path(out_dir)
    settings = {"base": str(base_dir), "steps": steps, "lr": lr, "seed": seed, "num_prompts": num_prompts}
    marker = out / "thinkonce_toy.json"
    if marker.is_file() and json.loads(marker.read_text()).get("settings") == settings:
        return out
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    renderer = PromptRenderer(str(base_dir), Prompts.official(False))
    inputs = toy_inputs(base_dir, toy_samples(num_prompts), seed=10_000 + seed)
    eos = renderer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = load_vl_model(base_dir, dtype=torch.float32)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    loss = 0.0
    for step in range(steps):
        loss = 0.0
        for mi in (inputs[(2 * step) % len(inputs)], inputs[(2 * step + 1) % len(inputs)]):
            target = renderer.tokenizer(toy_target(mi.sample, rng), add_special_tokens=False)["input_ids"] + [eos]
            pair_loss = response_loss(model, mi, target) / 2
            pair_loss.backward()
            loss += pair_loss.item()
        optim.step()
        optim.zero_grad(set_to_none=True)
    meta = {"settings": settings, "final_loss": loss, "family": model_family(base_dir)}
    return save_model_dir(model, renderer.processor, out, "thinkonce_toy.json", meta)


TOY_VERSION = 3
"""Part of the cached toy model's name; raised when what it is trained on changes (3: the prompts
are the evaluation variant that infer and eval render, rl.prompts), so no stale copy is reused."""


def confident_model(artifacts: str | Path, family: str = "qwen2_5_vl", *, steps: Optional[int] = None) -> Path:
    """The toy confident model of `family` under `artifacts`, built (with its tiny base) if missing."""
    root = Path(artifacts)
    base = root / f"tiny-{family}"
    if not (base / "model.safetensors").is_file():
        build_tiny(family, base)  # type: ignore[arg-type]
    kwargs = {} if steps is None else {"steps": steps}
    return build_confident_model(base, root / f"toy-confident-{family}-v{TOY_VERSION}", **kwargs)


def write_toy_video(path: str | Path, family: str, seed: int) -> Path:
    """An mp4 (lossless RGB H.264) of `toy_clip(family, seed)`'s frames, each twice at 4 fps, so that
    2 fps sampling through the data pipeline decodes exactly the clip `toy_inputs` renders."""
    import io

    import av

    frames = np.repeat(toy_clip(family, seed).frames, 2, axis=0)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264rgb", rate=4)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.options = {"crf": "0", "preset": "veryfast", "threads": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path
