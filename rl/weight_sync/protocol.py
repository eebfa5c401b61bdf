"""The weight-sync protocol: what learner rank 0 and every engine worker agree on, whatever the wire.

- Parameter metadata (`ParamMeta`): names, shapes and dtypes, agreed once at connect time and
  checked against the receiving model (`mismatches`).
- The bucket format: both sides derive the same plan from the metadata (`plan_buckets`), so a sync
  is one control call plus a stream of fixed-size byte buckets with no per-tensor headers; a bucket
  is the raw bytes of its tensors back to back (`as_bytes`), so any dtype mix travels.
- The group (`SyncGroupSpec`): how to reach it, its deadline (`timeout_s`) and bucket size.
- The deadline and abandon handshake: every wait polls a deadline and raises `SyncTimeout`; a
  member that fails a sync raises the sync's `AbandonFlag` in the group's store and every member
  polls it, so all abandon that sync together.
- `Sender` / `Receiver`: the two ends a transport implements (`rl/weight_sync/broadcast.py`, one
  torch.distributed broadcast group, is the one shipped); the learner and the engines import only
  this module's names and the transport's constructors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Optional, Protocol

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ParamMeta:
    """What the receiving side of a weight sync needs to know about one trainable tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * torch.empty((), dtype=self.dtype).element_size()


def plan_buckets(metas: Iterable[ParamMeta], bucket_bytes: int) -> list[list[ParamMeta]]:
    """Consecutive tensors grouped into buckets of at most `bucket_bytes` (a larger tensor travels alone).

    Sender and receiver derive the same plan from the same metadata, so buckets need no headers.
    """
    buckets: list[list[ParamMeta]] = []
    current: list[ParamMeta] = []
    size = 0
    for meta in metas:
        if current and size + meta.nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append(meta)
        size += meta.nbytes
    if current:
        buckets.append(current)
    return buckets



def as_bytes(tensor: torch.Tensor, meta: ParamMeta) -> torch.Tensor:
    """The tensor's bytes as a flat uint8 view, after checking it is what was agreed."""
    if tuple(tensor.shape) != meta.shape or tensor.dtype != meta.dtype:
        raise ValueError(f"weight sync: {meta.name} is {tuple(tensor.shape)} {tensor.dtype}, agreed {meta.shape} {meta.dtype}")
    return tensor.detach().contiguous().view(-1).view(torch.uint8)


def mismatches(
    metas: Iterable[ParamMeta],
    known: Mapping[str, tuple[int, ...]],
    dtype: torch.dtype,
    rename: Callable[[str], Optional[str]] = lambda name: name,
) -> list[str]:
    """Why `metas` (the learner's sync list) do not fit a model whose tensors are `known` (name -> shape).

    `rename` maps a learner name into `known`'s naming (e.g. vLLM's HF-to-vLLM mapper; None: no
    such tensor); every tensor must be `dtype`, the receiving model's. Empty when everything fits.
    """
    out = []
    for meta in metas:
        name = rename(meta.name)
        if name is None or name not in known:
            out.append(f"{meta.name}: not in the engine's model")
        elif tuple(known[name]) != meta.shape:
            out.append(f"{meta.name}: learner {meta.shape}, engine {tuple(known[name])}")
        if meta.dtype != dtype:
            out.append(f"{meta.name}: learner {meta.dtype}, engine {dtype}")
    return out


class SyncTimeout(RuntimeError):
    """A weight-sync collective missed its deadline or was abandoned: a peer (engine or learner) is dead or stuck."""


class AbandonFlag:
    """Per-sync failure flag in the group's TCPStore (hosted by learner rank 0): set once, seen by all.

    Sender and receivers count syncs the same way (one `next_sync` per send / receive), so the key
    `abandon/<n>` names the same sync on every member; a new group starts from 0.
    """

    POLL_S = 0.05

    def __init__(self, store: dist.Store) -> None:
        self.store = store
        self.sync = 0
        self._polled = 0.0

    def next_sync(self) -> None:
        self.sync += 1

    def raise_flag(self, reason: str) -> None:
        """Tell every member this sync is abandoned; the first reason stays (best effort: the store's host may be dead)."""
        try:
            self.store.compare_set(f"abandon/{self.sync}", "", reason[:1000])
        except Exception:
            pass

    def raised(self) -> Optional[str]:
        """The reason, once some member abandoned this sync (polled at most every POLL_S)."""
        now = time.monotonic()
        if now - self._polled < self.POLL_S:
            return None
        self._polled = now
        key = f"abandon/{self.sync}"
        try:
            return self.store.get(key).decode() if self.store.check([key]) else None
        except Exception as exc:
            return f"the group's store (on learner rank 0) is unreachable: {exc}"


@dataclass(frozen=True)
class SyncGroupSpec:
    """How to reach the sync group; handed to every member once."""

    host: str
    port: int
    world_size: int
    backend: str
    timeout_s: float
    bucket_bytes: int


class Sender(Protocol):
    """Learner rank 0's end of a transport."""

    def send(self, tensors: Iterable[torch.Tensor], stable: bool = False) -> dict[str, float]:
        """Send one sync's tensors in metadata order; returns the sync's figures (bytes, seconds, ...)."""

    def close(self) -> None:
        """Release the group (a new one is formed after an engine is replaced)."""


class Receiver(Protocol):
    """An engine worker's end of a transport."""

    def receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        """One sync's (name, tensor) pairs in metadata order, lazily; SyncTimeout on failure."""

    def abandon(self, reason: str) -> None:
        """Tell every member this sync failed here (the loader raised)."""

    def close(self) -> None:
        """Release the group."""
