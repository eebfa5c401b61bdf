"""Every learner forward runs the vision tower exactly twice, whatever modalities its batch holds.

Why: the paper's data mixes text (DAPO-Math), image (ViRL, ThinkLite) and video samples in one
shuffled stream, so in a round one learner rank may hold only text while its peer holds video.
A Qwen-VL forward calls the vision tower once for images and once for videos, and only for the
kinds present. Under ZeRO-3 every call gathers the tower's (and merger's) partitioned parameters
in a collective; under ZeRO-2/3 the merger's gradients are reduced in a collective in backward.
A rank that skips the tower joins fewer collectives than its peers: gloo aborts with a
"collective mismatch" and NCCL hangs.

The fix is the official code's "always both": when a batch lacks images, the tower also runs on
a dummy image, and when it lacks videos, on a dummy video (each a `[1, 4, 4]` grid of zeros), and
`0 * mean` of each dummy output the model uses (the merger's, and Qwen3-VL's deepstack mergers')
is added to the text embeddings. So each forward makes the same two tower calls, in the same module
order (embeddings, tower, tower, language model), on every rank; the merger always receives a
gradient (zero from a dummy); and the model's outputs are bit-identical (`x + 0 * y == x` for
finite y).

With a trainable tower (`learner.freeze_vision: false`) backward runs through the tower too, and
ZeRO-3 records a tower backward once per tower output that receives a gradient, then checks that
every rank recorded the same module trace. So a dummy uses exactly the outputs a real image or
video call feeds the language model (`pooler_output`, `deepstack_features`; never
`last_hidden_state`, the unmerged patches): otherwise a rank with two dummies records one tower
backward more than a rank with a real video, and DeepSpeed stops ("Detected a disagreement on list
length between rank0 and rank1").

It is installed as two forward pre-hooks on the HF model (`install_vision_lockstep`), so every
path that calls the model's `forward` gets it: old and reference log-probs, updates, with
gradient checkpointing on or off, and the shared-prefix packed forward alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

DUMMY_GRID = (1, 4, 4)
"""(t, h, w) in patches: the official code's dummy grid; 16 patches, 4 merged tokens."""


class VisionLockstep:
    """The hooks' state: which vision inputs the current forward brought, and the dummy inputs."""

    def __init__(self, vl_model: nn.Module) -> None:
        self.vl_model = vl_model
        vision = vl_model.config.vision_config
        patch, temporal = int(vision.patch_size), int(vision.temporal_patch_size)
        self.patch_dim = int(vision.in_channels) * temporal * patch * patch
        self.has = {"image": False, "video": False}
        self.tower_calls = 0
        """Tower calls made by dummies (a test counter)."""

    def before_model(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """Record which modalities this forward brings (pixels, or precomputed encoder outputs)."""
        encoded = kwargs.get("mm_encoder_outputs") or {}
        self.has["image"] = kwargs.get("pixel_values") is not None or encoded.get("image") is not None
        self.has["video"] = kwargs.get("pixel_values_videos") is not None or encoded.get("video") is not None

    def before_language_model(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """Run the tower on a dummy for each missing modality and add 0 * its mean to the embeddings."""
        embeds = kwargs.get("inputs_embeds")
        missing = [kind for kind, present in self.has.items() if not present]
        if embeds is None or not missing:
            return args, kwargs
        visual = self.vl_model.visual
        t, h, w = DUMMY_GRID
        grid = torch.tensor([DUMMY_GRID], dtype=torch.long, device=embeds.device)
        zero = embeds.new_zeros(())
        for _ in missing:
            pixels = torch.zeros((t * h * w, self.patch_dim), dtype=visual.dtype, device=embeds.device)
            zero = zero + 0.0 * _mean_of_used_outputs(visual(pixels, grid_thw=grid, return_dict=True)).to(embeds.dtype)
            self.tower_calls += 1
        kwargs["inputs_embeds"] = embeds + zero
        return args, kwargs


USED_OUTPUTS = ("pooler_output", "deepstack_features")
"""The tower outputs the model's get_image_features / get_video_features pass on to the language model."""


def _mean_of_used_outputs(output: Any) -> torch.Tensor:
    """Sum of the means of the tower outputs a real call's embeddings come from (merger, deepstack mergers)."""
    tensors: list[torch.Tensor] = []
    for key in USED_OUTPUTS:
        value = getattr(output, key, None)
        tensors.extend(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
    if not tensors:
        raise TypeError(f"the vision tower returned none of {USED_OUTPUTS} ({type(output).__name__})")
    return torch.stack([x.float().mean() for x in tensors]).sum()


def install_vision_lockstep(model: nn.Module) -> VisionLockstep:
    """Hook `model` (an HF Qwen2.5-VL / Qwen3-VL ...ForConditionalGeneration) so every forward calls the tower twice."""
    vl_model = getattr(model, "model", None)
    if vl_model is None or not hasattr(vl_model, "visual") or not hasattr(vl_model, "language_model"):
        raise TypeError(f"{type(model).__name__} has no model.visual / model.language_model: not a Qwen-VL model")
    state = VisionLockstep(vl_model)
    vl_model.register_forward_pre_hook(state.before_model, with_kwargs=True)
    vl_model.language_model.register_forward_pre_hook(state.before_language_model, with_kwargs=True)
    return state
