"""The learner's end of weight sync: which tensors travel, in what order, and the walk over them.

Only trainable parameters travel, under their HF in-memory names. Under ZeRO-3 every rank walks the
gathers (collective) and rank 0 sends; the protocol and the wire are rl.weight_sync's.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from learner.params import full_shape, gathered
from rl.weight_sync.broadcast import WeightSender
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec, plan_buckets


class LearnerSender:
    """One rank's part in every weight sync of the policy `module` (a DeepSpeed engine's module)."""

    def __init__(self, module: torch.nn.Module, rank: int, zero3: bool, device: torch.device) -> None:
        self.module, self.rank, self.zero3, self.device = module, rank, zero3, device
        self.spec: Optional[SyncGroupSpec] = None
        self.sender: Optional[WeightSender] = None
        self._order: Optional[list[ParamMeta]] = None

    def metas(self) -> list[ParamMeta]:
        """(name, full shape, dtype) of every trainable parameter, in sync order; HF in-memory names.

        Under ZeRO-0/1/2 the sync order is memory order: DeepSpeed's ZeRO-1/2 parameters are views of
        one flat buffer per parameter group, so consecutive tensors lie back to back and a bucket goes
        out in place (WeightSender). Under ZeRO-3, module order, the order the gathers run in. Fixed
        at the first call: the engines agree to it once, whatever happens to the memory later.
        """
        if self._order is None:
            named = [(name, p) for name, p in self.module.named_parameters() if p.requires_grad]
            if not self.zero3:
                named.sort(key=lambda item: (item[1].untyped_storage().data_ptr(), item[1].data_ptr()))
            self._order = [ParamMeta(name, full_shape(p), p.dtype) for name, p in named]
        return list(self._order)

    def buckets(self, bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Full trainable tensors, bucket by bucket per `plan_buckets`; collective under ZeRO-3 (all ranks iterate).

        The tensors are views valid until the next bucket is requested: send or copy them first.
        """
        params = dict(self.module.named_parameters())
        for bucket in plan_buckets(self.metas(), bucket_bytes):
            tensors = [params[meta.name] for meta in bucket]
            with gathered(tensors, self.zero3):
                yield [(meta.name, p.data) for meta, p in zip(bucket, tensors)]

    def connect(self, spec: SyncGroupSpec) -> None:
        """Join the weight-sync group as its rank 0 (learner rank 0 only; other ranks keep no sender)."""
        self.spec = spec
        if self.sender is not None:
            self.sender.close()
            self.sender = None
        if self.rank == 0:
            self.sender = WeightSender(spec, self.metas(), self.device)

    def broadcast(self) -> dict[str, float]:
        """Stream the trainable weights to the engines; every rank walks the buckets (ZeRO-3 gathers are collective).

        Every rank walks every gather even when the sync fails: rank 0's sender abandons the wire
        (raising the group's abandon flag, so the engines stop too) and rank 0 then keeps gathering
        with its peers, which never learn of the failure. The learner world stays in step at every
        ZeRO stage and the failure surfaces as rank 0's error, within the sync deadline.
        """
        tensors = (t for bucket in self.buckets(self.spec.bucket_bytes) for _, t in bucket)
        try:
            if self.rank != 0:
                return {}
            if self.sender is None:
                raise RuntimeError("weight sync: learner rank 0 is in no sync group (a failed connect); connect again")
            return self.sender.send(tensors, stable=not self.zero3)
        finally:
            for _ in tensors:
                pass
