"""Samples into model inputs: the chat messages, the video metadata, and the model's own processor.

`PromptRenderer` turns a `Sample` plus its decoded `Clip` into a `ModelInput` through the model's
own processor and chat template, so a real checkpoint and a tiny one take the same path. The user
text comes from the sample's problem type (`rl.problems`), the strings from `rl.prompts`.
"""

from __future__ import annotations

from typing import Any, Optional

from rl.family import model_family
from rl.problems import problem
from rl.prompts import Prompts
from rl.types import Clip, ModelInput, Sample


def user_text(sample: Sample, prompts: Prompts = Prompts()) -> str:
    """The text part of the user message, as the sample's problem type writes it."""
    return problem(sample.problem_type).user_text(sample, prompts)


def messages(sample: Sample, prompts: Prompts = Prompts()) -> list[dict[str, Any]]:
    """Chat messages in the Qwen-VL content-list form: visual item first, then the text."""
    content: list[dict[str, Any]] = []
    if sample.media_kind == "video":
        content.append({"type": "video"})
    elif sample.media_kind == "image":
        content.append({"type": "image"})
    content.append({"type": "text", "text": user_text(sample, prompts)})
    return [
        {"role": "system", "content": [{"type": "text", "text": prompts.system}]},
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

    def __init__(self, model_dir: str, prompts: Optional[Prompts] = None) -> None:
        """`prompts` defaults to the official training strings; inference passes `Prompts.official(False)`."""
        from transformers import AutoProcessor

        self.family = model_family(model_dir)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.prompts = prompts or Prompts.official(training=True)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def render(self, sample: Sample, clip: Optional[Clip] = None, image: Any = None) -> ModelInput:
        """Chat template + processor: token ids with expanded vision placeholders, HF and vLLM inputs."""
        text = self.processor.apply_chat_template(messages(sample, self.prompts), add_generation_prompt=True, tokenize=False)
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


