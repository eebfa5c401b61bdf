"""The broadcast transport of the weight-sync protocol (rl.weight_sync.protocol): learner rank 0
broadcasts the trainable weights to every engine worker.

The shape the field learned it must have (architecture.md):

- One extra process group, created once, that holds learner rank 0 (rank 0 of the group) and every
  engine worker (ranks 1..N); gloo on CPU, NCCL on GPU. It is its own `TCPStore` + process group,
  independent of the learner's DeepSpeed world and of vLLM's, so neither needs to know about it.
- Parameter names, shapes and dtypes are agreed once (`ParamMeta` list at connect time); both
  sides derive the same bucket plan from them (`plan_buckets`), so a sync is one
  control call plus a stream of fixed-size byte buckets with no per-tensor messages.
- Buckets are raw bytes (`uint8` views of the tensors, concatenated), so any dtype mix travels.
- Every collective has a deadline: a peer that died makes the sync raise `SyncTimeout` within
  `sync.timeout_s` instead of hanging the run (a raw NCCL broadcast has no timeout). That includes
  communicator setup: NCCL builds its communicator in the first collective, a blocking call, so
  joining ends with a warm-up broadcast run under the deadline.
- A member that fails a sync (its wire broke, its loader raised, its deadline passed) raises the
  sync's abandon flag in the group's store; every member polls it while waiting, so all abandon
  that sync within ~50 ms of the first failure. Without it a healthy receiver learns nothing when
  the sender stops (gloo reports no error to it) and sits out its whole deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from datetime import timedelta
from typing import Iterable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from rl.weight_sync.protocol import AbandonFlag, ParamMeta, SyncGroupSpec, SyncTimeout, as_bytes, plan_buckets


def free_port() -> int:
    """A TCP port free on this host now (the group's store listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def join_group(spec: SyncGroupSpec, rank: int, device: torch.device | str = "cpu") -> tuple[dist.ProcessGroup, AbandonFlag]:
    """Rendezvous through a TCPStore hosted by rank 0, then one warm-up broadcast; all within `spec.timeout_s`."""
    deadline = time.monotonic() + spec.timeout_s
    group, store = _connect(spec, rank)
    _warm_up(group, torch.device(device), deadline)
    return group, AbandonFlag(store)


def _connect(spec: SyncGroupSpec, rank: int) -> tuple[dist.ProcessGroup, dist.Store]:
    timeout = timedelta(seconds=spec.timeout_s)
    try:
        store = dist.TCPStore(spec.host, spec.port, spec.world_size, is_master=rank == 0, timeout=timeout)
    except Exception as exc:
        raise SyncTimeout(f"weight-sync group: rank {rank} could not join {spec.host}:{spec.port} "
                          f"within {spec.timeout_s}s: {exc}") from None
    store = dist.PrefixStore("thinkonce-weight-sync", store)
    if spec.backend == "gloo":
        return dist.ProcessGroupGloo(dist.PrefixStore("pg", store), rank, spec.world_size, timeout), store
    if spec.backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        return dist.ProcessGroupNCCL(dist.PrefixStore("pg", store), rank, spec.world_size, opts), store
    raise ValueError(f"weight-sync backend must be gloo or nccl, got '{spec.backend}'")


def _warm_up(group: dist.ProcessGroup, device: torch.device, deadline: float) -> None:
    """The group's first collective, under the deadline.

    NCCL creates its communicator inside the first collective, a blocking call that polling cannot
    interrupt; it runs in a helper thread so a member that never arrives costs the deadline, not
    the run (the stuck thread is abandoned with the group). Gloo connects in its constructor; the
    same warm-up then only confirms every member is there.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if device.type == "cuda" and device.index is not None:
                torch.cuda.set_device(device)
            broadcast(group, torch.zeros(1, device=device), deadline, "communicator setup")
        except BaseException as exc:  # handed to the joining thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="weight-sync-warm-up", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
    if thread.is_alive():
        raise SyncTimeout("weight sync: communicator setup missed its deadline; a member is dead or stuck")
    if errors:
        raise errors[0]


def start_broadcast(group: dist.ProcessGroup, tensor: torch.Tensor, what: str) -> dist.Work:
    """Issue a broadcast from group rank 0 without waiting for it."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    try:
        return group.broadcast([tensor], opts)
    except RuntimeError as exc:
        raise SyncTimeout(f"weight sync: {what} failed: {exc}") from None


def finish(work: dist.Work, deadline: float, what: str, cuda: bool = False, flag: Optional[AbandonFlag] = None) -> None:
    """Wait for `work`, raising SyncTimeout at `deadline` (time.monotonic) or once `flag` is raised."""
    try:
        while not work.is_completed():
            if time.monotonic() > deadline:
                raise SyncTimeout(f"weight sync: {what} missed its deadline; a peer has died or is stuck")
            reason = flag.raised() if flag is not None else None
            if reason is not None:
                raise SyncTimeout(f"weight sync: {what} abandoned: {reason}")
            time.sleep(0.0002)
        work.wait()
    except SyncTimeout:
        raise
    except RuntimeError as exc:
        raise SyncTimeout(f"weight sync: {what} failed: {exc}") from None
    if cuda:
        torch.cuda.current_stream().synchronize()


def broadcast(group: dist.ProcessGroup, tensor: torch.Tensor, deadline: float, what: str) -> None:
    """Broadcast from group rank 0 and wait, with a deadline."""
    finish(start_broadcast(group, tensor, what), deadline, what, tensor.is_cuda)


class WeightSender:
    """Group rank 0 (learner rank 0): streams the trainable tensors as fixed-size byte buckets.

    A bucket whose tensors lie back to back in one storage (ZeRO-1/2 parameters are views of
    DeepSpeed's flat buffers, and the learner lists them in memory order) is broadcast in place,
    with no copy. Any other bucket is packed into one of two buffers that alternate, so packing
    bucket i+1 (and gathering it, under ZeRO-3) overlaps the transfer of bucket i. Up to two
    buckets are in flight, so the wire never waits for the next bucket's packing to be noticed.
    """

    def __init__(self, spec: SyncGroupSpec, metas: Sequence[ParamMeta], device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.metas = list(metas)
        self.buckets = plan_buckets(self.metas, spec.bucket_bytes)
        self.device = torch.device(device)
        self.group, self.flag = join_group(spec, 0, self.device)
        largest = max(sum(m.nbytes for m in b) for b in self.buckets)
        self._buffers = [torch.empty(largest, dtype=torch.uint8, device=self.device) for _ in range(2)]

    def send(self, tensors: Iterable[torch.Tensor], stable: bool = False) -> dict[str, float]:
        """Broadcast `tensors` (in `metas` order, full shapes); returns bytes, seconds and buckets sent in place.

        `stable`: the tensors stay valid and unchanged until send returns (parameters under ZeRO-0/1/2),
        so back-to-back ones may be sent in place. Under ZeRO-3 a gathered tensor is released as soon
        as the source advances, possibly while its broadcast is in flight: such sources pack.
        Any failure raises the sync's abandon flag before it propagates, so the receivers stop too.
        """
        self.flag.next_sync()
        try:
            return self._send(iter(tensors), stable)
        except BaseException as exc:
            self.flag.raise_flag(f"learner rank 0: {exc}")
            raise

    def _send(self, source: Iterator[torch.Tensor], stable: bool) -> dict[str, float]:
        deadline = time.monotonic() + self.spec.timeout_s
        start = time.perf_counter()
        sent = in_place = 0
        in_flight: deque[tuple[dist.Work, str]] = deque()
        cuda = self.device.type == "cuda"
        for i, bucket in enumerate(self.buckets):
            flats = [as_bytes(next(source), meta) for meta in bucket]
            payload = _back_to_back(flats) if stable else None
            if len(in_flight) == 2:  # bucket i-2 used the buffer we may pack into now
                work, what = in_flight.popleft()
                finish(work, deadline, what, cuda, self.flag)
            if payload is None:
                payload = self._buffers[i % 2][: sum(f.numel() for f in flats)]
                torch.cat(flats, out=payload)
            else:
                in_place += 1
            what = f"bucket {i + 1}/{len(self.buckets)}"
            in_flight.append((start_broadcast(self.group, payload, what), what))
            sent += payload.numel()
        for work, what in in_flight:
            finish(work, deadline, what, cuda, self.flag)
        return {
            "sync/bytes": float(sent),
            "sync/seconds": time.perf_counter() - start,
            "sync/buckets": float(len(self.buckets)),
            "sync/buckets_in_place": float(in_place),
        }

    def close(self) -> None:
        """Release the group's connections (a new group is formed after an engine restart)."""
        self.group.shutdown()


def _back_to_back(flats: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """One uint8 view over all of `flats` when they lie back to back in one storage, else None."""
    storage = flats[0].untyped_storage()
    begin = end = flats[0].data_ptr()
    for flat in flats:
        if flat.untyped_storage().data_ptr() != storage.data_ptr() or flat.data_ptr() != end:
            return None
        end += flat.numel()
    view = torch.empty(0, dtype=torch.uint8, device=flats[0].device)
    return view.set_(storage, begin - storage.data_ptr(), (end - begin,))


class WeightReceiver:
    """An engine worker's end: yields (name, tensor) lazily, one bucket at a time.

    Lazy, so the model loader consumes tensors while later buckets are still arriving: bucket i+1
    is already being received while the loader takes bucket i. Every bucket has its own buffer,
    so a yielded tensor stays valid until the next sync (vLLM's CPU reload path holds tensors
    across the whole iterator; sharing buffers within a sync would corrupt them). On CPU the
    buffers are kept from one sync to the next: the CPU allocator hands large blocks back to the
    OS, so fresh ones would page-fault on every sync (CUDA's caching allocator reuses its blocks).
    """

    def __init__(self, spec: SyncGroupSpec, rank: int, metas: Sequence[ParamMeta], device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.metas = list(metas)
        self.buckets = plan_buckets(self.metas, spec.bucket_bytes)
        self.device = torch.device(device)
        self.group, self.flag = join_group(spec, rank, self.device)
        self._kept: dict[int, torch.Tensor] = {}

    def _buffer(self, i: int) -> torch.Tensor:
        if i in self._kept:
            return self._kept[i]
        buffer = torch.empty(sum(m.nbytes for m in self.buckets[i]), dtype=torch.uint8, device=self.device)
        if self.device.type == "cpu":
            self._kept[i] = buffer
        return buffer

    def receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        """One sync's tensors in `metas` order; raises SyncTimeout (and raises the abandon flag) on failure.

        A consumer that fails while loading must call `abandon` itself: the generator cannot see it.
        """
        self.flag.next_sync()
        try:
            yield from self._receive()
        except SyncTimeout as exc:
            self.flag.raise_flag(str(exc))
            raise

    def abandon(self, reason: str) -> None:
        """Abandon the current sync on every member (e.g. this engine's loader rejected a tensor)."""
        self.flag.raise_flag(reason)

    def _receive(self) -> Iterator[tuple[str, torch.Tensor]]:
        deadline = time.monotonic() + self.spec.timeout_s
        cuda = self.device.type == "cuda"
        whats = [f"bucket {i + 1}/{len(self.buckets)}" for i in range(len(self.buckets))]

        def post(i: int) -> tuple[dist.Work, torch.Tensor]:
            buffer = self._buffer(i)
            return start_broadcast(self.group, buffer, whats[i]), buffer

        work, buffer = post(0)
        for i, bucket in enumerate(self.buckets):
            finish(work, deadline, whats[i], cuda, self.flag)
            current = buffer
            if i + 1 < len(self.buckets):
                work, buffer = post(i + 1)
            offset = 0
            for meta in bucket:
                yield meta.name, current[offset : offset + meta.nbytes].view(meta.dtype).view(meta.shape)
                offset += meta.nbytes

    def close(self) -> None:
        self.group.shutdown()
