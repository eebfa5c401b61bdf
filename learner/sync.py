"""Weight sync: learner rank 0 broadcasts the trainable weights to every engine worker.

The shape the field learned it must have (architecture.md):

- One extra process group, created once, that holds learner rank 0 (rank 0 of the group) and every
  engine worker (ranks 1..N); gloo on CPU, NCCL on GPU. It is its own `TCPStore` + process group,
  independent of the learner's DeepSpeed world and of vLLM's, so neither needs to know about it.
- Parameter names, shapes and dtypes are agreed once (`ParamMeta` list at connect time); both
  sides derive the same bucket plan from them (`learner.params.plan_buckets`), so a sync is one
  control call plus a stream of fixed-size byte buckets with no per-tensor messages.
- Buckets are raw bytes (`uint8` views of the tensors, concatenated), so any dtype mix travels.
- Every collective has a deadline: a peer that died makes the sync raise `SyncTimeout` within
  `sync.timeout_s` instead of hanging the run (a raw NCCL broadcast has no timeout).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist

from learner.params import ParamMeta, plan_buckets


class SyncTimeout(RuntimeError):
    """A weight-sync collective missed its deadline: a peer (engine or learner) is dead or stuck."""


@dataclass(frozen=True)
class SyncGroupSpec:
    """How to reach the sync group; handed to every member once."""

    host: str
    port: int
    world_size: int
    backend: str
    timeout_s: float
    bucket_bytes: int


def free_port() -> int:
    """A TCP port free on this host now (the group's store listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def join_group(spec: SyncGroupSpec, rank: int) -> dist.ProcessGroup:
    """Rendezvous through a TCPStore hosted by rank 0; blocks until all members joined or the deadline."""
    timeout = timedelta(seconds=spec.timeout_s)
    try:
        store = dist.TCPStore(spec.host, spec.port, spec.world_size, is_master=rank == 0, timeout=timeout)
    except Exception as exc:
        raise SyncTimeout(f"weight-sync group: rank {rank} could not join {spec.host}:{spec.port} "
                          f"within {spec.timeout_s}s: {exc}") from None
    store = dist.PrefixStore("thinkonce-weight-sync", store)
    if spec.backend == "gloo":
        return dist.ProcessGroupGloo(store, rank, spec.world_size, timeout)
    if spec.backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, spec.world_size, opts)
    raise ValueError(f"weight-sync backend must be gloo or nccl, got '{spec.backend}'")


def broadcast(group: dist.ProcessGroup, tensor: torch.Tensor, deadline: float, what: str) -> None:
    """Broadcast from group rank 0, raising SyncTimeout if it has not completed by `deadline`."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    try:
        work = group.broadcast([tensor], opts)
        while not work.is_completed():
            if time.monotonic() > deadline:
                raise SyncTimeout(f"weight sync: {what} missed its deadline; a peer has died or is stuck")
            time.sleep(0.0002)
        work.wait()
    except SyncTimeout:
        raise
    except RuntimeError as exc:
        raise SyncTimeout(f"weight sync: {what} failed: {exc}") from None
    if tensor.is_cuda:
        torch.cuda.current_stream().synchronize()


class WeightSender:
    """Group rank 0 (learner rank 0): streams the trainable tensors as fixed-size byte buckets."""

    def __init__(self, spec: SyncGroupSpec, metas: Sequence[ParamMeta], device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.metas = list(metas)
        self.buckets = plan_buckets(self.metas, spec.bucket_bytes)
        self.device = torch.device(device)
        self.group = join_group(spec, 0)
        self._buffer = torch.empty(max(sum(m.nbytes for m in b) for b in self.buckets), dtype=torch.uint8, device=self.device)

    def send(self, tensors: Iterable[torch.Tensor]) -> dict[str, float]:
        """Broadcast `tensors` (in `metas` order, full shapes); returns bytes and seconds."""
        deadline = time.monotonic() + self.spec.timeout_s
        start = time.perf_counter()
        source = iter(tensors)
        sent = 0
        for i, bucket in enumerate(self.buckets):
            offset = 0
            for meta in bucket:
                tensor = next(source)
                if tuple(tensor.shape) != meta.shape or tensor.dtype != meta.dtype:
                    raise ValueError(f"weight sync: {meta.name} is {tuple(tensor.shape)} {tensor.dtype}, "
                                     f"agreed {meta.shape} {meta.dtype}")
                flat = tensor.detach().contiguous().view(-1).view(torch.uint8)
                self._buffer[offset : offset + flat.numel()].copy_(flat, non_blocking=True)
                offset += flat.numel()
            broadcast(self.group, self._buffer[:offset], deadline, f"bucket {i + 1}/{len(self.buckets)}")
            sent += offset
        return {"sync/bytes": float(sent), "sync/seconds": time.perf_counter() - start, "sync/buckets": float(len(self.buckets))}

    def close(self) -> None:
        """Release the group's connections (a new group is formed after an engine restart)."""
        self.group.shutdown()


class WeightReceiver:
    """An engine worker's end: yields (name, tensor) lazily, one bucket at a time.

    Lazy, so the model loader consumes tensors while later buckets are still to come and only one
    bucket is ever held in memory.
    """

    def __init__(self, spec: SyncGroupSpec, rank: int, metas: Sequence[ParamMeta], device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.metas = list(metas)
        self.buckets = plan_buckets(self.metas, spec.bucket_bytes)
        self.device = torch.device(device)
        self.group = join_group(spec, rank)

    def receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        deadline = time.monotonic() + self.spec.timeout_s
        for i, bucket in enumerate(self.buckets):
            buffer = torch.empty(sum(m.nbytes for m in bucket), dtype=torch.uint8, device=self.device)
            broadcast(self.group, buffer, deadline, f"bucket {i + 1}/{len(self.buckets)}")
            offset = 0
            for meta in bucket:
                yield meta.name, buffer[offset : offset + meta.nbytes].view(meta.dtype).view(meta.shape)
                offset += meta.nbytes
