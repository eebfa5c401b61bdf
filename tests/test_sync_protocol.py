"""The weight-sync protocol between plain processes: bucketed bytes arrive intact; a dead peer hits the deadline."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
import torch

from rl.weight_sync.broadcast import WeightReceiver, WeightSender, free_port
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec, SyncTimeout

METAS = [
    ParamMeta("a.weight", (64, 32), torch.float32),
    ParamMeta("a.bias", (64,), torch.float32),
    ParamMeta("b.weight", (300, 7), torch.bfloat16),
    ParamMeta("c.weight", (5,), torch.float32),
]


def _tensors(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(m.shape, generator=g).to(m.dtype) for m in METAS]


def _in_one_buffer(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same values as views of one byte buffer, back to back (how ZeRO-1/2 holds parameters)."""
    buffer = torch.cat([t.view(-1).view(torch.uint8) for t in tensors])
    views, offset = [], 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        views.append(buffer[offset : offset + nbytes].view(t.dtype).view(t.shape))
        offset += nbytes
    return views


def _receiver(spec: SyncGroupSpec, rank: int, queue, rounds: int) -> None:
    recv = WeightReceiver(spec, rank, METAS)
    for _ in range(rounds):
        # Plain bytes: a tensor put on the queue would travel as a shared fd that the parent can only
        # open while this process is alive (it may already have exited when the parent reads).
        queue.put([(name, str(t.dtype), _bytes(t)) for name, t in recv.receive()])


def _spec(world: int, bucket_bytes: int, timeout: float = 30.0) -> SyncGroupSpec:
    return SyncGroupSpec(host="127.0.0.1", port=free_port(), world_size=world, backend="gloo",
                         timeout_s=timeout, bucket_bytes=bucket_bytes)


@pytest.mark.parametrize("layout", ["separate", "separate-stable", "one-buffer-stable"])
@pytest.mark.parametrize("bucket_bytes", [1024, 10_000, 1 << 20])
def test_buckets_arrive_intact_at_every_receiver(bucket_bytes, layout):
    """Packed buckets, and buckets sent in place from a stable source, carry the same bytes."""
    ctx = mp.get_context("spawn")
    spec = _spec(3, bucket_bytes)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_receiver, args=(spec, r, queue, 2)) for r in (1, 2)]
    for p in procs:
        p.start()
    sender = WeightSender(spec, METAS)
    for seed in (1, 2):
        source = _in_one_buffer(_tensors(seed)) if layout.startswith("one-buffer") else _tensors(seed)
        stats = sender.send(source, stable=layout.endswith("stable"))
        assert stats["sync/bytes"] == sum(m.nbytes for m in METAS)
        single = sum(len(b) == 1 for b in sender.buckets)
        expected_in_place = {"separate": 0, "separate-stable": single, "one-buffer-stable": len(sender.buckets)}[layout]
        assert stats["sync/buckets_in_place"] == expected_in_place
        for _ in procs:
            got = queue.get(timeout=30)
            assert [n for n, _, _ in got] == [m.name for m in METAS]
            for (name, dtype, data), want in zip(got, _tensors(seed)):
                assert dtype == str(want.dtype) and data == _bytes(want), name
    for p in procs:
        p.join(timeout=30)


def test_shape_mismatch_is_rejected_before_sending():
    spec = _spec(1, 1 << 20)
    sender = WeightSender(spec, METAS)
    bad = _tensors(0)
    bad[1] = torch.zeros(65)
    with pytest.raises(ValueError, match="a.bias"):
        sender.send(bad)


def test_dead_receiver_raises_within_deadline():
    ctx = mp.get_context("spawn")
    spec = _spec(2, 1024, timeout=4.0)
    queue = ctx.Queue()
    proc = ctx.Process(target=_receiver, args=(spec, 1, queue, 1))
    proc.start()
    sender = WeightSender(spec, METAS)
    sender.send(_tensors(0))
    queue.get(timeout=30)
    proc.join(timeout=30)  # the receiver has exited: it will never take the next sync
    start = time.monotonic()
    with pytest.raises(SyncTimeout):
        sender.send(_tensors(1))
    assert time.monotonic() - start < spec.timeout_s + 2.0


def _hoarding_receiver(spec: SyncGroupSpec, queue) -> None:
    recv = WeightReceiver(spec, 1, METAS)
    kept = list(recv.receive())  # like vLLM's CPU reload: every tensor is held until the end
    queue.put([(name, _bytes(t)) for name, t in kept])


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def test_tensors_stay_valid_when_the_loader_keeps_them_all():
    ctx = mp.get_context("spawn")
    spec = _spec(2, 1024)
    queue = ctx.Queue()
    proc = ctx.Process(target=_hoarding_receiver, args=(spec, queue))
    proc.start()
    WeightSender(spec, METAS).send(_tensors(5))
    got = queue.get(timeout=30)
    proc.join(timeout=30)
    for (name, data), want in zip(got, _tensors(5)):
        assert data == _bytes(want), name


BIG = [ParamMeta(f"p{i}", (256, 1024), torch.float32) for i in range(24)]


def _timed_receiver(spec: SyncGroupSpec, rank: int, queue, fail_after: int) -> None:
    """Takes one sync; with `fail_after` >= 0 its loader fails after that many tensors (and abandons)."""
    recv = WeightReceiver(spec, rank, BIG)
    queue.put(("joined", rank))
    start = time.monotonic()
    try:
        for i, _ in enumerate(recv.receive()):
            if i == fail_after:
                recv.abandon(f"rank {rank}: loader rejected tensor {i}")
                raise ValueError("loader failed")
        queue.put((rank, "ok", time.monotonic() - start))
    except Exception as exc:
        queue.put((rank, str(exc), time.monotonic() - start))
    time.sleep(30)  # an engine process outlives its failed sync: its connections stay open


def _group_of_three(spec: SyncGroupSpec, fail_after: tuple[int, int]):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_timed_receiver, args=(spec, r, queue, f)) for r, f in zip((1, 2), fail_after)]
    for p in procs:
        p.start()
    sender = WeightSender(spec, BIG)
    assert sorted(queue.get(timeout=60) for _ in procs) == [("joined", 1), ("joined", 2)]
    return sender, queue, procs


def test_a_killed_receiver_makes_every_member_abandon_long_before_the_deadline():
    """Gloo tells only the sender that a receiver died; the abandon flag tells the other receiver."""

    spec = _spec(3, 1 << 20, timeout=60.0)
    sender, queue, procs = _group_of_three(spec, (-1, -1))
    procs[1].kill()  # rank 2 dies before the stream starts; rank 1 is healthy and waiting in the receive
    start = time.monotonic()
    with pytest.raises(SyncTimeout, match="bucket"):
        sender.send([torch.randn(m.shape) for m in BIG])
    rank, message, seconds = queue.get(timeout=60)
    assert rank == 1 and "abandoned" in message and "learner rank 0" in message
    assert seconds < 10 and time.monotonic() - start < 10, "both stopped within seconds, not at the 60 s deadline"
    procs[0].kill()


def test_a_receiver_whose_loader_fails_stops_the_sender_and_the_other_receiver():
    spec = _spec(3, 1 << 20, timeout=60.0)
    sender, queue, procs = _group_of_three(spec, (-1, 3))
    start = time.monotonic()
    with pytest.raises(SyncTimeout, match="loader rejected tensor 3"):
        sender.send([torch.randn(m.shape) for m in BIG])
    assert time.monotonic() - start < 10
    results = {rank: message for rank, message, _ in (queue.get(timeout=60) for _ in procs)}
    assert results[2] == "loader failed" and "loader rejected tensor 3" in results[1]
    for p in procs:
        p.kill()
