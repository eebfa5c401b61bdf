"""Every prompt of ThinkOnce, in one place, and their rendering into model inputs.

The system prompt is the compatibility constant the released checkpoints were trained with
(method.md section 2); the evaluation code appends one trailing newline, and that variant is the
default. User messages put the visual item first, then the text, with a per-problem-type suffix.
`PromptRenderer` turns a `Sample` plus its decoded `Clip` into a `ModelInput` through the model's
own processor and chat template, so a real checkpoint and a tiny one take the same path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rl.types import Clip, ModelInput, Sample

SYSTEM_PROMPT = (
    "You are a helpful assistant.\n"
    "FIRST: Output your initial answer inside the first \\boxed{...} without any analysis or explanations. "
    "If you cannot determine the answer without reasoning, output \\boxed{Let's analyze the problem step by step.} instead.\n"
    "THEN: Think through the reasoning as an internal monologue enclosed within <think>...</think>.\n"
    "AT LAST: Output the final answer again inside \\boxed{...}. If you believe the previous answer was correct, "
    "repeat it; otherwise, correct it.\n"
    "Output format: \\boxed{...}<think>...</think>\\boxed{...}"
)
SYSTEM_PROMPT_EVAL = SYSTEM_PROMPT + "\n"
"""The default: the variant the official evaluation code uses (one trailing newline)."""

USER_SUFFIX = "\nPut your final answer in \\boxed{}."
GROUNDING_TEMPLATE = (
    "Please locate the start and end timestamps of the video segment corresponding to the description: "
    "'{question}'. Give the timestamps in seconds with one decimal, in the form \\boxed{{[start, end]}}."
)
GQA_SUFFIX = (
    "\nAnswer the question and locate the start and end timestamps of the video segment that supports it, "
    "in seconds with one decimal, in the form \\boxed{answer <> [start, end]}."
)


def system_prompt(value: Optional[str] = None) -> str:
    """The configured system prompt: None -> the evaluation default; a path -> its contents; else the text."""
    if value is None:
        return SYSTEM_PROMPT_EVAL
    path = Path(value)
    if len(value) < 4096 and "\n" not in value and path.suffix in (".txt", ".md") and path.is_file():
        return path.read_text()
    return value


def user_text(sample: Sample) -> str:
    """The text part of the user message, by problem type (method.md section 2).

    The loaders have already rendered the options into `sample.question` (as `A. ...` lines).
    """
    if sample.problem_type == "iou":
        return GROUNDING_TEMPLATE.format(question=sample.question)
    if sample.problem_type == "gqa":
        return sample.question + GQA_SUFFIX
    return sample.question + USER_SUFFIX


def messages(sample: Sample, system: str) -> list[dict[str, Any]]:
    """Chat messages in the Qwen-VL content-list form: visual item first, then the text."""
    content: list[dict[str, Any]] = []
    if sample.media_kind == "video":
        content.append({"type": "video"})
    elif sample.media_kind == "image":
        content.append({"type": "image"})
    content.append({"type": "text", "text": user_text(sample)})
    return [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": content},
    ]


def video_metadata(clip: Clip, family: str = "qwen3_vl") -> dict[str, Any]:
    """Per-video metadata of a pre-sampled clip (Qwen3-VL needs it and must not resample).

    Qwen2.5-VL's processors (transformers 5.x and vLLM alike) ignore an `fps` kwarg and derive
    second_per_grid_ts = temporal_patch / sampled_fps from this metadata (no metadata: 24 fps;
    a clip's source indices: n / total_frames * fps, wrong for a windowed clip). Describing the
    clip as its own T frames at `sample_fps` makes both give the fps qwen-vl-utils gives.
    """
    t, h, w = clip.frames.shape[:3]
    if family == "qwen2_5_vl":
        fps, total, indices = clip.sample_fps, t, list(range(t))
    else:
        fps, total, indices = clip.video_fps, clip.total_frames, list(clip.indices)
    return {
        "fps": fps,
        "total_num_frames": total,
        "frames_indices": indices,
        "duration": clip.duration,
        "height": h,
        "width": w,
        "video_backend": "decord",
        "do_sample_frames": False,
    }


class PromptRenderer:
    """Renders samples into `ModelInput`s with a model's processor (loaded once per process)."""

    def __init__(self, model_dir: str, system: Optional[str] = None) -> None:
        from transformers import AutoProcessor

        from rl.tiny import model_family

        self.family = model_family(model_dir)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.system = system_prompt(system)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def render(self, sample: Sample, clip: Optional[Clip] = None, image: Any = None) -> ModelInput:
        """Chat template + processor: token ids with expanded vision placeholders, HF and vLLM inputs."""
        text = self.processor.apply_chat_template(messages(sample, self.system), add_generation_prompt=True, tokenize=False)
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        mm_data: dict[str, Any] = {}
        if sample.media_kind == "video":
            if clip is None:
                raise ValueError(f"sample {sample.id}: a video sample needs its decoded clip")
            kwargs.update(self._video_kwargs(clip))
            mm_data["video"] = (clip.frames, video_metadata(clip, self.family))
        elif sample.media_kind == "image":
            if image is None:
                raise ValueError(f"sample {sample.id}: an image sample needs its image")
            kwargs["images"] = [image]
            mm_data["image"] = image
        out = self.processor(**kwargs)
        hf_inputs = {k: v for k, v in out.items() if k not in ("input_ids", "attention_mask")}
        mm_kwargs = {k: kwargs[k] for k in ("fps", "do_resize") if k in kwargs}
        return ModelInput(
            sample=sample,
            prompt_ids=out["input_ids"][0].tolist(),
            engine_prompt_ids=self.tokenizer(text, add_special_tokens=False)["input_ids"],
            mm_kwargs=mm_kwargs,
            mm_data=mm_data,
            hf_inputs=hf_inputs,
        )

    def _video_kwargs(self, clip: Clip) -> dict[str, Any]:
        # Frames are already sampled and resized by the frame plan: the processor must do neither.
        kwargs: dict[str, Any] = {"videos": [clip.frames], "do_sample_frames": False, "do_resize": False}
        meta = video_metadata(clip, self.family)
        meta.pop("do_sample_frames")
        kwargs["video_metadata"] = [meta]
        return kwargs
