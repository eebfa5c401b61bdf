"""The small typed records that cross component and actor boundaries.

Every component speaks these: the data side produces `Sample` and `ModelInput`, the rollout side
returns `Generation`, the reward side returns `RewardBreakdown`. They are plain dataclasses so
they pickle cheaply through Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

ProblemType = str
"""A name in `rl.problems.REGISTRY` (exact_match, math, iou, gqa): every rule of a type lives there."""

Segment = list[float]
"""[start, end] in seconds."""
Answer = Union[str, Segment, list[Segment], dict]
"""str (exact_match, math), [s, e] or [[s, e], ...] (iou), {"answer": str, "segment": [s, e]} (gqa)."""

MediaKind = Literal["video", "image", "none"]


@dataclass
class Sample:
    """One training or evaluation item in the internal schema (method.md section 6)."""

    id: str
    source: str
    problem_type: ProblemType
    question: str
    answer: Answer
    options: Optional[list[str]] = None
    media_kind: MediaKind = "none"
    media_path: Optional[str] = None
    video_start: Optional[float] = None
    video_end: Optional[float] = None
    duration: Optional[float] = None


@dataclass
class ModelInput:
    """A rendered prompt: what an engine and the learner need to run the model on one sample.

    `prompt_ids` are the chat-templated token ids with the vision placeholders expanded.
    `mm_data` is vLLM's `multi_modal_data` (e.g. {"video": (frames THWC uint8, metadata)}).
    `hf_inputs` are the processor's tensors for a transformers forward (pixel_values_videos,
    video_grid_thw, mm_token_type_ids, ...), without input_ids / attention_mask.
    """

    sample: Sample
    prompt_ids: list[int]
    engine_prompt_ids: list[int]
    """The chat-templated ids before placeholder expansion: vLLM expands them itself (given the
    expanded ids it would expand the first placeholder again)."""
    mm_kwargs: dict[str, Any] = field(default_factory=dict)
    """vLLM `mm_processor_kwargs` so its processor reproduces `prompt_ids` (fps, no resize)."""
    mm_data: dict[str, Any] = field(default_factory=dict)
    hf_inputs: dict[str, Any] = field(default_factory=dict)
    mm_ref: Any = None
    """A prompt built by a builder actor carries its `mm_data` as this Ray object reference instead
    (owned by the driver, stored on the builder's node), so the frames go to the engines and learner
    ranks without passing through the driver; `rl.pixels.with_media` fetches them where used."""

    def hf_inputs_with_text(self, extra_tokens: int) -> dict[str, Any]:
        """`hf_inputs` for the prompt followed by `extra_tokens` text tokens (a response): the
        per-token modality ids (`mm_token_type_ids`) are extended with text (0), so Qwen's 3-D
        positions continue the prompt's last one."""
        import torch

        out = dict(self.hf_inputs)
        types = out.get("mm_token_type_ids")
        if types is not None:
            out["mm_token_type_ids"] = torch.cat([types, torch.zeros((types.shape[0], extra_tokens), dtype=types.dtype)], dim=1)
        return out


@dataclass
class Generation:
    """One sampled response. `logprobs[i]` is the log-prob of `token_ids[i]` under the distribution it was sampled from (tempered)."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    """"stop" (EOS or stop string) or "length" (hit max_new_tokens)."""


@dataclass
class RewardBreakdown:
    """The dual-answer reward of one response; `a1`/`a2` are task rewards before weights."""

    a1: float
    a2: float
    format: float
    fallback: float
    total: float
    timed_out: bool = False


@dataclass
class Clip:
    """Decoded video frames, already sampled and resized per the frame plan (method.md section 5).

    Qwen2.5-VL is told `sample_fps`; Qwen3-VL gets the metadata (video_fps, indices,
    total_frames) and must not resample.
    """

    frames: Any
    """np.ndarray (T, H, W, 3) uint8, T even, H and W multiples of 2 * patch."""
    indices: list[int]
    video_fps: float
    total_frames: int
    duration: float
    """Seconds of the whole source video."""
    sample_fps: float
    """What Qwen2.5-VL is told: n / window_frames * video_fps, as qwen-vl-utils computes it."""
