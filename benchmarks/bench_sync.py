"""Weight-sync throughput: bucketed sync vs one flat broadcast of the same bytes over the same group.

The flat broadcast is the practical limit of the wire (one collective, no per-tensor work). The
bucketed sync is what ThinkOnce does: metadata agreed once, fixed-size byte buckets, one broadcast
per bucket, the receiver handing out views lazily. Parameters mimic a transformer's mix (large
matrices, small norms and biases), laid out two ways, as the learner holds them:

- `contiguous`: views of one buffer, back to back (ZeRO-1/2: DeepSpeed's flat parameter buffers); the
  sender broadcasts each bucket in place.
- `scattered`: separate tensors (ZeRO-3 gathers, released as the source advances); every bucket
  is packed into the sender's buffers first.

Then the learner's seconds per 1k trained tokens on the tiny model, one rank, ZeRO-2
(benchmarks/bench_learner.py has the options and the per-phase split).

    python benchmarks/bench_sync.py [--total-mb 256] [--receivers 1] [--repeats 3] [--no-learner]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.weight_sync.broadcast import WeightReceiver, WeightSender, broadcast, free_port  # noqa: E402
from rl.weight_sync.protocol import (
    ParamMeta,  # noqa: E402
    SyncGroupSpec,  # noqa: E402
)


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
    buffer = torch.empty(flat_bytes, dtype=torch.uint8)
    for _ in range(repeats):
        for _layout in LAYOUTS:
            for _name, _tensor in recv.receive():
                pass
        broadcast(recv.group, buffer, time.monotonic() + spec.timeout_s, "flat")


LAYOUTS = ("contiguous", "scattered")


def source_tensors(metas: list[ParamMeta], layout: str) -> list[torch.Tensor]:
    """Random tensors for `metas`: views of one buffer (`contiguous`) or separate allocations (`scattered`)."""
    if layout == "scattered":
        return [torch.randn(m.shape) for m in metas]
    flat = torch.randn(sum(m.nbytes for m in metas) // 4)
    out, offset = [], 0
    for m in metas:
        numel = m.nbytes // 4
        out.append(flat[offset : offset + numel].view(m.shape))
        offset += numel
    return out


def run(total_mb: float, bucket_mbs: list[float], receivers: int, repeats: int) -> dict:
    metas = transformer_like(int(total_mb * (1 << 20)))
    total = sum(m.nbytes for m in metas)
    sources = {layout: source_tensors(metas, layout) for layout in LAYOUTS}
    ctx = mp.get_context("spawn")
    results = []
    for bucket_mb in bucket_mbs:
        spec = SyncGroupSpec("127.0.0.1", free_port(), 1 + receivers, "gloo", 120.0, int(bucket_mb * (1 << 20)))
        procs = [ctx.Process(target=_receiver, args=(spec, r, metas, repeats, total)) for r in range(1, receivers + 1)]
        for p in procs:
            p.start()
        sender = WeightSender(spec, metas)
        # The same bytes, written: an untouched torch.empty would be the kernel's zero page, which
        # the socket reads from cache and so looks faster than any real buffer.
        flat = torch.cat([t.view(-1).view(torch.uint8) for t in sources["scattered"]])
        bucketed: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        flat_times = []
        for _ in range(repeats):  # interleaved, so all three see the same conditions
            for layout in LAYOUTS:
                start = time.perf_counter()
                stats = sender.send(sources[layout], stable=layout == "contiguous")
                bucketed[layout].append(time.perf_counter() - start)
                assert (stats["sync/buckets_in_place"] == len(sender.buckets)) == (layout == "contiguous")
            start = time.perf_counter()
            broadcast(sender.group, flat, time.monotonic() + 120.0, "flat")
            flat_times.append(time.perf_counter() - start)
        for p in procs:
            p.join(timeout=120)
        best_flat = min(flat_times)
        row = {"bucket_mb": bucket_mb, "buckets": len(sender.buckets), "flat_s": round(best_flat, 4),
               "flat_gb_per_s": round(total / best_flat / 1e9, 3)}
        for layout in LAYOUTS:
            best = min(bucketed[layout])
            row[layout] = {"sync_s": round(best, 4), "sync_gb_per_s": round(total / best / 1e9, 3),
                           "fraction_of_flat": round(best_flat / best, 3)}
        results.append(row)
    out = {
        "benchmark": "weight sync (gloo, loopback, CPU)",
        "bytes": total,
        "tensors": len(metas),
        "receivers": receivers,
        "repeats": repeats,
        "by_bucket_size": results,
    }
    for layout in LAYOUTS:
        best = max(results, key=lambda r: r[layout]["fraction_of_flat"])
        out[f"best_{layout}"] = {"bucket_mb": best["bucket_mb"], "fraction_of_flat": best[layout]["fraction_of_flat"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mb", type=float, default=256.0)
    parser.add_argument("--bucket-mb", type=float, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-learner", action="store_true", help="skip the learner's seconds per 1k tokens")
    args = parser.parse_args()
    out = run(args.total_mb, args.bucket_mb, args.receivers, args.repeats)
    if not args.no_learner:
        import bench_learner

        figures = bench_learner.run(ranks_list=(1,), rounds=2)["ranks"]["1"]
        out["learner_s_per_1k_response_tokens"] = figures["s_per_1k_response_tokens"]["round_wall"]
        out["learner_s_per_1k_prompt_plus_response_tokens"] = figures["s_per_1k_prompt_plus_response_tokens"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
