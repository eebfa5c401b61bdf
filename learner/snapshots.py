"""Frozen copies of the policy: the reference (pi_ref, for the KL term) and the behaviour snapshot.

Both are optimizer-less DeepSpeed engines, partitioned like the policy under ZeRO-3. The behaviour
snapshot (pi_behav of one-step off-policy rounds, `grpo.behaviour_logprobs: learner`) holds the
policy one version back: before a round's update the rank copies its own partitions of the policy
into it (rank-local, no collective).
"""

from __future__ import annotations

from typing import Any, Optional

import torch


def frozen_engine(model: torch.nn.Module, ds_config: dict[str, Any]):
    """`model` as an optimizer-less DeepSpeed engine in eval mode, no parameter trainable."""
    import deepspeed

    for param in model.parameters():
        param.requires_grad_(False)
    engine, _, _, _ = deepspeed.initialize(model=model, config=ds_config)
    engine.eval()
    return engine


class BehaviourSnapshot:
    """The policy of one version back, for the truncated importance weight of overlapped rounds."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.version: Optional[int] = None

    def take(self, policy: torch.nn.Module, version: int) -> None:
        """Copy the policy's weights (this rank's ZeRO-3 partitions, or whole tensors) in, as `version`."""
        if self.version == version:
            return
        with torch.no_grad():
            for (_, src), (_, dst) in zip(policy.named_parameters(), self.engine.module.named_parameters()):
                if hasattr(src, "ds_tensor") and hasattr(dst, "ds_tensor"):
                    dst.ds_tensor.copy_(src.ds_tensor)
                else:
                    dst.data.copy_(src.data)
        self.version = version
