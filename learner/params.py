"""Which parameters train and which decay (their sync metadata and buckets: rl.weight_sync.protocol).

Parameter names, as checked on transformers 5.19 and vLLM 0.32:

- In memory (`named_parameters()`), both families: `model.language_model.*`, `model.visual.*`,
  `lm_head.*`.
- In the safetensors that `save_pretrained` writes: Qwen3-VL keeps the in-memory names; Qwen2.5-VL
  is written in its original checkpoint layout, `model.layers.*` / `model.embed_tokens.*` /
  `model.norm.*` / `visual.*` / `lm_head.*` (transformers reverses its load-time renaming on save).
- vLLM's `hf_to_vllm_mapper` accepts the in-memory names for both families (Qwen2.5-VL accepts
  both layouts), so weight sync sends the in-memory names unchanged and no mapping is needed.

The vision encoder is frozen; the vision-language merger (Qwen2.5-VL `visual.merger`, Qwen3-VL
`visual.merger` and `visual.deepstack_merger_list`) and the language model train (method.md
section 4). `is_trainable` is the one place that rule lives.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

VISION_PREFIX = "model.visual."
MERGER_PREFIXES = ("model.visual.merger.", "model.visual.deepstack_merger_list.")


def is_trainable(name: str, freeze_vision: bool = True) -> bool:
    """True for the language model, lm_head and the vision-language merger(s); False for the vision encoder."""
    if not freeze_vision or not name.startswith(VISION_PREFIX):
        return True
    return name.startswith(MERGER_PREFIXES)


def apply_freeze(model: torch.nn.Module, freeze_vision: bool = True) -> None:
    """Set requires_grad per `is_trainable`; fails if the rule matches no vision or no merger parameter."""
    names = [name for name, _ in model.named_parameters()]
    if freeze_vision and not any(n.startswith(VISION_PREFIX) for n in names):
        raise ValueError(f"no parameter under '{VISION_PREFIX}': the freeze rule does not fit this model")
    if freeze_vision and not any(n.startswith(MERGER_PREFIXES) for n in names):
        raise ValueError(f"no merger parameter under {MERGER_PREFIXES}: the freeze rule does not fit this model")
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name, freeze_vision))


def decays(name: str, shape: tuple[int, ...]) -> bool:
    """Weight decay on matrices and embeddings only, not on biases and norm gains (1-D), as HF Trainer/TRL do."""
    return len(shape) >= 2 and not name.endswith(".bias")


@contextmanager
def gathered(params: list[torch.nn.Parameter], zero3: bool) -> Iterator[None]:
    """Full parameters inside the block: gathered from their partitions under ZeRO-3 (collective)."""
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


def full_shape(param: torch.nn.Parameter) -> tuple[int, ...]:
    """A parameter's whole shape, also when ZeRO-3 holds only this rank's partition of it."""
    return tuple(getattr(param, "ds_shape", param.shape))
