"""The group-shared forward: one packed row `[q, o_1, ..., o_k]` per (sub)group instead of k rows `[q, o_i]`.

GRPO samples G responses o_1..o_G to each prompt q; the per-row forward runs the vision tower and
the language model over q once per response. Here a micro-batch row holds a prompt once, followed
by the responses of that prompt the micro-batch holds, and a mask gives each token of o_i exactly
the context it has in its own row:

    token t of o_i attends to  q  and  o_i[:t+1]          (never to o_j, j != i)
    its 3-D RoPE position is   the position it has in the row [q, o_i]

so every per-token log-prob log pi(o_{i,t} | q, o_{i,<t}) equals the per-row one (up to float
summation order), and the loss's gradient through the shared q is the sum over its responses,
which is what autograd computes for the k copies. Positions are read from the model's own
`get_rope_index` on the row [q, longest o_i] (Qwen2.5-VL's text-after-video rule of rl.mrope
included), then gathered for each packed token: response positions depend only on the prompt and
the offset t, never on the other responses.

The mask is built by transformers' mask interface for the model's attention implementation (a
4-D bool tensor for sdpa, a float bias for eager, a BlockMask for flex_attention), and handed to
the model's normal `forward()` as a prepared 4-D mask, so forward hooks, ZeRO-3 gathers and
gradient checkpointing apply as for any batch. Flash-attention's varlen kernel cannot express a
prefix shared by several segments, so the shared forward refuses it.

Which samples share a prompt is `prompt_groups`' answer (object identity, then content).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rl.types import ModelInput

SHARED_PREFIX_ATTENTION = ("sdpa", "eager", "flex_attention")
PROMPT, PAD = 0, -1
"""Segment ids of a packed row: the prompt, padding; response i of the row is i (1-based)."""


@dataclass
class Packing:
    """What a packed micro-batch needs beyond its model kwargs: segments and the per-row layout of each row."""

    segments: Tensor
    """(B, L) PROMPT, 1..k for the row's responses, PAD."""
    rope_ids: Tensor
    """(B, L') each row's per-row twin [q, longest o_i], right-padded, whose positions the packed row reuses."""
    rope_types: Tensor
    """(B, L') mm_token_type_ids of the twin."""
    rope_mask: Tensor
    """(B, L') 1 on the twin's tokens."""
    rope_index: Tensor
    """(B, L) index into the twin of each packed token (prompt token j -> j, token t of a response -> len(q) + t)."""

    def to(self, device: torch.device | str) -> "Packing":
        return Packing(*(t.to(device) for t in (self.segments, self.rope_ids, self.rope_types, self.rope_mask, self.rope_index)))


def prompt_groups(inputs: list[ModelInput]) -> list[int]:
    """A group id per sample: samples with the same prompt (and the same vision tensors) share one.

    LearnerGroup hands a prompt's G samples over as one ModelInput object (Ray pickles the list with
    identity preserved), so identity decides at once; equal copies that are distinct objects are
    found by comparing prompt ids, then the vision tensors.
    """
    by_id: dict[int, int] = {}
    by_prompt: dict[tuple[int, ...], list[tuple[ModelInput, int]]] = {}
    groups: list[int] = []
    for mi in inputs:
        if id(mi) not in by_id:
            candidates = by_prompt.setdefault(tuple(mi.prompt_ids), [])
            match = next((g for other, g in candidates if _same_tensors(other.hf_inputs, mi.hf_inputs)), None)
            if match is None:
                match = sum(len(c) for c in by_prompt.values())
                candidates.append((mi, match))
            by_id[id(mi)] = match
        groups.append(by_id[id(mi)])
    return groups


def _same_tensors(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside a DeepSpeed engine (or the model itself)."""
    return getattr(model, "module", model)


def shared_prefix_inputs(model: torch.nn.Module, packing: Packing, model_inputs: dict[str, Tensor]) -> dict[str, Any]:
    """Explicit 3-D `position_ids` and the prefix-sharing 4-D `attention_mask` of a packed micro-batch."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, and_masks, causal_mask_function

    hf = unwrap(model)
    text_config = hf.config.get_text_config()
    impl = text_config._attn_implementation
    if impl not in SHARED_PREFIX_ATTENTION:
        raise ValueError(
            f"learner.shared_prefix needs attention that takes a custom mask ({', '.join(SHARED_PREFIX_ATTENTION)}), "
            f"not '{impl}': set model.attn_implementation accordingly or learner.shared_prefix: false"
        )
    grids = {k: model_inputs[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in model_inputs}
    twin, _ = hf.model.get_rope_index(packing.rope_ids, mm_token_type_ids=packing.rope_types, attention_mask=packing.rope_mask, **grids)
    position_ids = torch.gather(twin, 2, packing.rope_index.unsqueeze(0).expand(3, -1, -1).to(twin.device))

    segments = packing.segments

    def shares_prefix(batch_idx, head_idx, q_idx, kv_idx):
        return (segments[batch_idx, kv_idx] == PROMPT) | (segments[batch_idx, kv_idx] == segments[batch_idx, q_idx])

    batch, length = segments.shape
    mask = ALL_MASK_ATTENTION_FUNCTIONS[impl](
        batch_size=batch,
        q_length=length,
        kv_length=length,
        mask_function=and_masks(causal_mask_function, shares_prefix),
        attention_mask=segments != PAD,
        allow_is_causal_skip=False,
        dtype=hf.dtype,
        device=segments.device,
    )
    return {"position_ids": position_ids, "attention_mask": mask}
