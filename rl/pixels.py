"""Frames, not float pixels, on the wire: prompts travel with their uint8 frames; a transformers
consumer (learner rank, HF engine) makes the pixel tensor itself.

The processor's `pixel_values_videos` / `pixel_values` are the frames normalised to float32 and cut
into patches: 4 bytes for every byte of the uint8 frames the engines already get (a 2-minute 720p
clip at the training budget: 63 MB of float32 for 16 MB of frames). So a built prompt keeps only
the small processor outputs (grids, token types, per-grid seconds) plus `mm_data` (the frames or
the image), and `PixelMaker.restore` runs the model's own image/video processor on them again,
with resizing and frame sampling off, as the renderer did: the same pixels, bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch

from rl.types import ModelInput

PIXEL_KEYS = ("pixel_values", "pixel_values_videos")
GRID_KEY = {"pixel_values": "image_grid_thw", "pixel_values_videos": "video_grid_thw"}


def strip_pixels(mi: ModelInput) -> ModelInput:
    """The prompt without its float pixel tensors (restorable from `mi.mm_data`)."""
    if not any(key in mi.hf_inputs for key in PIXEL_KEYS):
        return mi
    if not mi.mm_data and mi.mm_ref is None:
        raise ValueError(f"sample {mi.sample.id}: pixels cannot be dropped without the frames they came from (mm_data)")
    return dataclasses.replace(mi, hf_inputs={k: v for k, v in mi.hf_inputs.items() if k not in PIXEL_KEYS})


def with_media(inputs: Sequence[ModelInput]) -> list[ModelInput]:
    """Each prompt with its `mm_data` in hand: references left by builder actors (`mm_ref`) are
    fetched from the object store in one call; the copies of one prompt stay one object."""
    pending = {id(mi): mi for mi in inputs if mi.mm_ref is not None}
    if not pending:
        return list(inputs)
    import ray

    media = ray.get([mi.mm_ref for mi in pending.values()])
    done = {key: dataclasses.replace(mi, mm_data=m, mm_ref=None) for (key, mi), m in zip(pending.items(), media)}
    return [done.get(id(mi), mi) for mi in inputs]


def needs_pixels(mi: ModelInput) -> bool:
    """Whether `mi` lost pixel tensors that its grids say it has."""
    return any(GRID_KEY[key] in mi.hf_inputs and key not in mi.hf_inputs for key in PIXEL_KEYS)


class PixelMaker:
    """Rebuilds pixel tensors from a prompt's frames with the model's processor (loaded once)."""

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_dir)

    def restore(self, inputs: Sequence[ModelInput]) -> list[ModelInput]:
        """Each prompt with its pixel tensors; the copies of one prompt stay one object."""
        inputs = with_media(inputs)
        done: dict[int, ModelInput] = {}
        for mi in inputs:
            if id(mi) not in done:
                done[id(mi)] = self._restore_one(mi) if needs_pixels(mi) else mi
        return [done[id(mi)] for mi in inputs]

    def _restore_one(self, mi: ModelInput) -> ModelInput:
        hf_inputs = dict(mi.hf_inputs)
        if "video_grid_thw" in hf_inputs and "pixel_values_videos" not in hf_inputs:
            frames, meta = mi.mm_data["video"]
            meta = {k: v for k, v in meta.items() if k != "do_sample_frames"}
            out = self.processor.video_processor(videos=[frames], video_metadata=[meta], do_sample_frames=False,
                                                 do_resize=False, return_tensors="pt")
            hf_inputs["pixel_values_videos"] = _checked(out, "pixel_values_videos", "video_grid_thw", hf_inputs, mi)
        if "image_grid_thw" in hf_inputs and "pixel_values" not in hf_inputs:
            out = self.processor.image_processor(images=[mi.mm_data["image"]], return_tensors="pt")
            hf_inputs["pixel_values"] = _checked(out, "pixel_values", "image_grid_thw", hf_inputs, mi)
        return dataclasses.replace(mi, hf_inputs=hf_inputs)


def _checked(out: Any, key: str, grid_key: str, hf_inputs: dict[str, Any], mi: ModelInput) -> torch.Tensor:
    """The rebuilt tensor, after checking its patch grid is the one the prompt was rendered with."""
    if not torch.equal(torch.as_tensor(out[grid_key]), torch.as_tensor(hf_inputs[grid_key])):
        raise ValueError(f"sample {mi.sample.id}: rebuilt {key} has grid {out[grid_key].tolist()}, "
                         f"the prompt was rendered with {hf_inputs[grid_key].tolist()}")
    return out[key]
