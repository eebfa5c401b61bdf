"""Weight-sync throughput: bucketed sync vs one flat broadcast of the same bytes over the same group.

The flat broadcast is the practical limit of the wire (one collective, no per-tensor work). The
bucketed sync is what ThinkOnce does: metadata agreed once, tensors packed into fixed-size byte
buckets, one broadcast per bucket, the receiver unpacking views lazily. Parameters mimic a
transformer's mix (large matrices, small norms and biases). Also times the learner's seconds per
1k trained tokens on the tiny model (benchmarks/bench_learner.py measures it in more detail).

    python benchmarks/bench_sync.py [--total-mb 256] [--receivers 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch

from learner.params import ParamMeta
from learner.sync import SyncGroupSpec, WeightReceiver, WeightSender, broadcast, free_port


def transformer_like(total_bytes: int, hidden: int = 1024) -> list[ParamMeta]:
    """A layer pattern of a decoder (qkv/o/mlp matrices, norms, biases) repeated to ~total_bytes (fp32)."""
    layer = [((3 * hidden, hidden), "qkv.weight"), ((3 * hidden,), "qkv.bias"), ((hidden, hidden), "o.weight"),
             ((hidden,), "ln1.weight"), ((4 * hidden, hidden), "up.weight"), ((hidden, 4 * hidden), "down.weight"),
             ((hidden,), "ln2.weight")]
    metas, size, i = [], 0, 0
    while size < total_bytes:
        for shape, name in layer:
            meta = ParamMeta(f"layers.{i}.{name}", shape, torch.float32)
            metas.append(meta)
            size += meta.nbytes
        i += 1
    return metas


def _receiver(spec: SyncGroupSpec, rank: int, metas: list[ParamMeta], repeats: int, flat_bytes: int) -> None:
    torch.set_num_threads(1)
    recv = WeightReceiver(spec, rank, metas)
    for _ in range(repeats):
        for _name, tensor in recv.receive():
            pass
    buffer = torch.empty(flat_bytes, dtype=torch.uint8)
    for _ in range(repeats):
        broadcast(recv.group, buffer, time.monotonic() + spec.timeout_s, "flat")


def run(total_mb: float, bucket_mbs: list[float], receivers: int, repeats: int) -> dict:
    metas = transformer_like(int(total_mb * (1 << 20)))
    total = sum(m.nbytes for m in metas)
    tensors = [torch.randn(m.shape) for m in metas]
    ctx = mp.get_context("spawn")
    results = []
    for bucket_mb in bucket_mbs:
        spec = SyncGroupSpec("127.0.0.1", free_port(), 1 + receivers, "gloo", 120.0, int(bucket_mb * (1 << 20)))
        procs = [ctx.Process(target=_receiver, args=(spec, r, metas, repeats, total)) for r in range(1, receivers + 1)]
        for p in procs:
            p.start()
        sender = WeightSender(spec, metas)
        bucketed = []
        for _ in range(repeats):
            start = time.perf_counter()
            sender.send(tensors)
            bucketed.append(time.perf_counter() - start)
        flat = torch.empty(total, dtype=torch.uint8)
        flat_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            broadcast(sender.group, flat, time.monotonic() + 120.0, "flat")
            flat_times.append(time.perf_counter() - start)
        for p in procs:
            p.join(timeout=120)
        best, best_flat = min(bucketed), min(flat_times)
        results.append({
            "bucket_mb": bucket_mb,
            "buckets": len(sender.buckets),
            "sync_s": round(best, 4),
            "sync_gb_per_s": round(total / best / 1e9, 3),
            "flat_s": round(best_flat, 4),
            "flat_gb_per_s": round(total / best_flat / 1e9, 3),
            "fraction_of_flat": round(best_flat / best, 3),
        })
    best = max(results, key=lambda r: r["fraction_of_flat"])
    return {
        "benchmark": "weight sync (gloo, loopback, CPU)",
        "bytes": total,
        "tensors": len(metas),
        "receivers": receivers,
        "repeats": repeats,
        "by_bucket_size": results,
        "best_bucket_mb": best["bucket_mb"],
        "best_fraction_of_flat": best["fraction_of_flat"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mb", type=float, default=256.0)
    parser.add_argument("--bucket-mb", type=float, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.total_mb, args.bucket_mb, args.receivers, args.repeats)))


if __name__ == "__main__":
    main()
