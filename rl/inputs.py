"""Sample -> ModelInput: decode the media (through the clip cache) and render the prompt.

One builder per process (driver, filter, infer) holds the processor and the clip cache, so the G
copies of a prompt and repeated epochs share one decode. A sample that cannot be used raises
`SampleError` with a short `reason` that callers count; it never ends a run.
"""

from __future__ import annotations

from rl.config import DataConfig
from rl.data.video import MediaError, VideoLoader, VideoSampling, load_image
from rl.prompts import Prompts
from rl.render import PromptRenderer
from rl.types import ModelInput, Sample


class SampleError(RuntimeError):
    """A sample skipped at input time; `reason` is one of MediaError's codes or `prompt_too_long`."""

    def __init__(self, sample_id: str, reason: str, detail: str) -> None:
        super().__init__(f"sample {sample_id}: {reason}: {detail}")
        self.sample_id = sample_id
        self.reason = reason
        self.detail = detail

    def __reduce__(self):
        # Builder actors return it to the driver: pickle it with its own arguments.
        return (SampleError, (self.sample_id, self.reason, self.detail))


class InputBuilder:
    """Builds model inputs for one model family from the data config's sampling parameters."""

    def __init__(self, model_dir: str, data: DataConfig, *, training: bool = True) -> None:
        """`training`: the system prompt as trained (no trailing newline); False for inference and
        evaluation, which use the official evaluation variant (rl.prompts)."""
        self.renderer = PromptRenderer(model_dir, Prompts.from_config(data, training=training))
        self.patch_size = 14 if self.renderer.family == "qwen2_5_vl" else 16
        self.sampling = VideoSampling.from_config(data, self.patch_size)
        self.videos = VideoLoader(self.sampling, cache_size=data.video_cache_size)
        self.max_prompt_length = data.max_prompt_length

    @property
    def tokenizer(self):
        return self.renderer.tokenizer

    def build(self, sample: Sample) -> ModelInput:
        """The rendered prompt of `sample`; raises SampleError for bad media or an over-long prompt."""
        try:
            if sample.media_kind == "video":
                mi = self.renderer.render(sample, clip=self.videos.load_sample(sample))
            elif sample.media_kind == "image":
                image = load_image(sample.media_path, patch_size=self.patch_size,
                                   min_pixels=self.sampling.min_pixels, max_pixels=self.sampling.max_pixels)
                mi = self.renderer.render(sample, image=image)
            else:
                mi = self.renderer.render(sample)
        except MediaError as exc:
            raise SampleError(sample.id, exc.reason, exc.detail) from None
        if len(mi.prompt_ids) > self.max_prompt_length:
            raise SampleError(sample.id, "prompt_too_long",
                              f"{len(mi.prompt_ids)} tokens > data.max_prompt_length={self.max_prompt_length}")
        return mi
