"""Qwen2.5-VL 3-D RoPE positions as the model was trained and as vLLM computes them.

transformers 5.19's `Qwen2_5_VLModel.get_rope_index` starts the text that follows a video at
`start + max(grid_h, grid_w) / merge`, ignoring the video's temporal positions. The reference
(Qwen's own code, transformers <= 5.2, vLLM's `get_mrope_input_positions`) starts it at
`max(video positions) + 1`. The two agree while the temporal span `(grid_t - 1) * interval` stays
below the spatial side, which a 4-frame clip at 112x112 does (t positions 0, 2 vs h/w 0..3) and an
8-frame one does not (t positions 0, 2, 4, 6): every token after the video then sat 3 positions
earlier in transformers than in vLLM, and rollout and learner log-probs differed by up to ~4e-3.

`install_reference_mrope()` replaces transformers' method for the whole process; `load_vl_model`,
the one way this project loads a transformers VL model (learner, reference model, HF engine, warm
start, toy model), installs it first. Temporal positions are computed as vLLM computes them:
`int(t * second_per_grid_t * tokens_per_second)` in float64.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Optional

import torch


def rope_index(
    input_ids: torch.LongTensor,
    mm_token_type_ids: torch.Tensor,
    *,
    spatial_merge_size: int,
    tokens_per_second: float,
    image_grid_thw: Optional[torch.Tensor] = None,
    video_grid_thw: Optional[torch.Tensor] = None,
    second_per_grid_ts: Optional[torch.Tensor] = None,
    attention_mask: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(position_ids (3, B, L), rope_deltas (B, 1)) of right- or left-padded rows.

    Rows are walked in order and take their images / videos from the concatenated grids in that
    order, as transformers does; text is 0 in `mm_token_type_ids`, images 1, videos 2.
    """
    position_ids = torch.zeros(3, *input_ids.shape, dtype=input_ids.dtype, device=input_ids.device)
    grids = {
        1: iter(image_grid_thw.tolist()) if image_grid_thw is not None else iter(()),
        2: iter(video_grid_thw.tolist()) if video_grid_thw is not None else iter(()),
    }
    seconds = iter(second_per_grid_ts.tolist()) if second_per_grid_ts is not None else itertools.repeat(1.0)
    deltas = []
    for row in range(input_ids.shape[0]):
        types_row = mm_token_type_ids[row]
        valid = attention_mask[row].bool() if attention_mask is not None else torch.ones_like(types_row, dtype=torch.bool)
        types_row = types_row[valid.to(types_row.device)].tolist()
        parts: list[torch.Tensor] = []
        start = 0
        for modality, group in itertools.groupby(types_row):
            length = len(list(group))
            if modality == 0:
                parts.append(torch.arange(length).expand(3, -1) + start)
                start += length
                continue
            t, h, w = next(grids[modality])
            h, w = h // spatial_merge_size, w // spatial_merge_size
            if t * h * w != length:
                raise ValueError(f"a run of {length} vision tokens for a grid of {t}x{h}x{w} (merged)")
            factor = float(next(seconds)) * tokens_per_second if modality == 2 else 1.0
            tt = (torch.arange(t, dtype=torch.float64) * factor).long() if factor != 1.0 else torch.arange(t)
            grid = torch.stack(torch.meshgrid(tt, torch.arange(h), torch.arange(w), indexing="ij")).reshape(3, -1)
            parts.append(grid + start)
            start = int(parts[-1].max()) + 1
        positions = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
        position_ids[:, row, valid.to(position_ids.device)] = positions.to(position_ids)
        deltas.append(start - len(types_row))
    return position_ids, torch.tensor(deltas, device=input_ids.device).unsqueeze(1)


_INSTALLED = False


def install_reference_mrope() -> None:
    """Make every transformers Qwen2.5-VL model of this process compute the reference positions (idempotent).

    Patches `Qwen2_5_VLModel.get_rope_index`, which training and scoring forwards
    (`compute_3d_position_ids`) and `generate` (`_prepare_position_ids_for_generation`) all call,
    so any model loaded in the process (learner, reference model, HF engine, warm start, a test's
    exported copy) places tokens where vLLM does. Qwen3-VL needs nothing: its videos are one grid
    per frame (t = 1) with timestamps as text, and its transformers positions match vLLM's.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

    def get_rope_index(self, input_ids, mm_token_type_ids=None, image_grid_thw=None, video_grid_thw=None,
                       second_per_grid_ts=None, attention_mask=None, **kwargs):
        if mm_token_type_ids is None:
            raise ValueError("Qwen2.5-VL 3-D positions need mm_token_type_ids")
        vision = self.config.vision_config
        return rope_index(
            input_ids,
            mm_token_type_ids,
            spatial_merge_size=vision.spatial_merge_size,
            tokens_per_second=getattr(vision, "tokens_per_second", 1.0),
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts,
            attention_mask=attention_mask,
        )

    get_rope_index.__doc__ = "Reference Qwen2.5-VL 3-D positions (installed by rl.mrope)."
    modeling_qwen2_5_vl.Qwen2_5_VLModel.get_rope_index = get_rope_index
    _INSTALLED = True


def load_vl_model(model_dir: str | Path, **kwargs: Any) -> torch.nn.Module:
    """`AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs)` with the reference positions installed."""
    from transformers import AutoModelForImageTextToText

    install_reference_mrope()
    return AutoModelForImageTextToText.from_pretrained(str(model_dir), **kwargs)
