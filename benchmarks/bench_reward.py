"""Reward scoring throughput: one process vs RewardPool with 1 and 2 workers, on the same inputs.

The inputs are seeded: responses over the four problem types, right, wrong and malformed, plus a
few that stall math-verify (`9^{9^{9^{9}}}`: sympy evaluates the tower, far past any limit). The
single-process loop runs RewardScorer with the same per-sample alarm as the workers, so every
run pays `timeout_s` per stalling sample. Expected pool time: (n x normal cost + stalls x
timeout_s) / workers, but a stall cannot split across workers, so the floor is
ceil(stalls / workers) x timeout_s. CPU seconds (driver + workers) and the CPU share each process
got show whether the cores were ours alone. Prints one JSON object.

    .venv/bin/python benchmarks/bench_reward.py [--n 2000] [--stalls 5] [--timeout 5] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
import ray  # noqa: E402

from reward.pool import RewardPool  # noqa: E402
from reward.scorer import Item, RewardScorer  # noqa: E402
from rl.grammar import FALLBACK  # noqa: E402
from rl.types import RewardBreakdown  # noqa: E402

STALL = "9^{9^{9^{9}}}"
LETTERS = "ABCDE"


def _response(a1: str, a2: str, rng: random.Random) -> str:
    """A well-formed response, or (one in five) a malformed one."""
    think = "Let me look at the frames again. " * rng.randint(1, 20)
    kind = rng.random()
    if kind < 0.05:
        return f"\\boxed{{{a1}}}"
    if kind < 0.10:
        return f"\\boxed{{{a1}}}<think></think>\\boxed{{{a2}}}"
    if kind < 0.15:
        return f"\\boxed{{{a1}}}\\boxed{{{a1}}}<think>{think}</think>\\boxed{{{a2}}}"
    if kind < 0.20:
        return f"Answer: \\boxed{{{a1}}}<think>{think}</think>\\boxed{{{a2}}} done"
    return f"\\boxed{{{a1}}}<think>{think}</think>\\boxed{{{a2}}}"


def _math(rng: random.Random) -> tuple[str, list[str]]:
    """A ground truth and answers to it: right in other forms, and wrong."""
    p, q = rng.randint(1, 50), rng.randint(51, 99)
    k = rng.randint(2, 12)
    choice = rng.randrange(4)
    if choice == 0:
        return f"\\frac{{{p}}}{{{q}}}", [f"\\frac{{{p * k}}}{{{q * k}}}", f"{p}/{q}", f"\\frac{{{q}}}{{{p}}}"]
    if choice == 1:
        return f"{k}\\sqrt{{{p}}}", [f"\\sqrt{{{k * k * p}}}", f"{k}\\sqrt{{{p}}}", f"{k + 1}\\sqrt{{{p}}}"]
    if choice == 2:
        return str(p * q), [str(p * q), f"{p}\\cdot{q}", str(p * q + 1)]
    return f"{p}\\pi", [f"{p}\\pi", f"\\frac{{{2 * p}\\pi}}{{2}}", str(p)]


def _interval(s: float, e: float, rng: random.Random) -> str:
    form = rng.randrange(3)
    if form == 0:
        return f"[{s:.1f}, {e:.1f}]"
    if form == 1:
        return f"{s:.1f} to {e:.1f}"
    return f"({s:.1f}, {e:.1f})"


def build_items(n: int, stalls: int, seed: int) -> list[Item]:
    """n seeded items over all four problem types; `stalls` of them (random places) stall math-verify."""
    rng = random.Random(seed)
    items: list[Item] = []
    for _ in range(n - stalls):
        kind = rng.choices(["exact_match", "math", "iou", "gqa"], weights=[35, 30, 20, 15])[0]
        fallback = rng.random() < 0.2
        if kind == "exact_match":
            gt = rng.choice(LETTERS + "YN")
            gt = {"Y": "yes", "N": "no"}.get(gt, gt)
            answers = [gt, f"({gt})", rng.choice(LETTERS), "Yes." if gt == "yes" else f"{gt}. a red car"]
        elif kind == "math":
            gt, answers = _math(rng)
        elif kind == "iou":
            s = round(rng.uniform(0, 100), 1)
            gt = [s, round(s + rng.uniform(2, 30), 1)]
            answers = [_interval(gt[0] + rng.uniform(-3, 3), gt[1] + rng.uniform(-3, 3), rng), "no idea", _interval(gt[1], gt[0], rng)]
        else:
            s = round(rng.uniform(0, 100), 1)
            gt = {"answer": rng.choice(LETTERS), "segment": [s, round(s + rng.uniform(2, 30), 1)]}
            answers = [f"{gt['answer']} <> {_interval(s + rng.uniform(-3, 3), gt['segment'][1], rng)}", f"{rng.choice(LETTERS)} <> [0.0, 5.0]"]
        a2 = rng.choice(answers)
        a1 = FALLBACK if fallback else rng.choice(answers)
        items.append((_response(a1, a2, rng), gt, kind))
    for _ in range(stalls):
        items.insert(rng.randrange(len(items) + 1), (f"\\boxed{{{STALL}}}<think>check</think>\\boxed{{{STALL}}}", str(rng.randint(2, 99)), "math"))
    return items


def _uncapped_stall_s(cap_s: float) -> float:
    """Seconds math-verify spends on the stalling input with no timeout at all, up to cap_s (a subprocess)."""
    code = (
        "from math_verify import parse, verify\n"
        f"verify(parse('$2$', parsing_timeout=None), parse('${STALL}$', parsing_timeout=None), timeout_seconds=None)\n"
    )
    start = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-c", code], timeout=cap_s, capture_output=True, check=True)
    except subprocess.TimeoutExpired:
        pass
    return time.perf_counter() - start


def _host_parallel_speedup() -> float:
    """Throughput of two pure-Python loops at once over one alone: what 2 cores give right now (others share them)."""
    code = "sum(i * i for i in range(10**7))"

    def run(copies: int) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(copies)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - start

    return round(2 * run(1) / run(2), 2)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def _run_single(items: list[Item], timeout_s: float) -> tuple[dict[str, Any], list[RewardBreakdown]]:
    scorer = RewardScorer(timeout_s)
    scorer.warm_up()
    cpu = time.process_time()
    start = time.perf_counter()
    results = scorer.score_many(items)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    return {
        "seconds": round(seconds, 3),
        "samples_per_s": round(len(items) / seconds, 1),
        "timeouts": scorer.timeouts,
        "cpu_s": round(cpu, 2),
        "cpu_per_process": round(cpu / seconds, 2),
    }, results


def _run_pool(items: list[Item], timeout_s: float, workers: int, reference: list[RewardBreakdown]) -> dict[str, Any]:
    start = time.perf_counter()
    pool = RewardPool(num_workers=workers, timeout_s=timeout_s)
    pool.wait_ready()
    startup = time.perf_counter() - start
    try:
        pids = [os.getpid(), *pool.worker_pids]
        cpu = _cpu_seconds(pids)
        start = time.perf_counter()
        results = pool.score_batch(items)
        seconds = time.perf_counter() - start
        cpu = _cpu_seconds(pids) - cpu
    finally:
        pool.shutdown()
    return {
        "workers": workers,
        "seconds": round(seconds, 3),
        "samples_per_s": round(len(items) / seconds, 1),
        "timeouts": pool.timeouts,
        "restarts": pool.restarts,
        "startup_s": round(startup, 2),
        "cpu_s": round(cpu, 2),
        "cpu_per_worker": round(cpu / seconds / workers, 2),
        "mismatches_vs_single": sum(a != b for a, b in zip(results, reference)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--stalls", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-sample limit, seconds")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stall-probe", type=float, default=20.0, help="cap (s) on timing the stall uncapped; 0 skips")
    args = parser.parse_args()

    items = build_items(args.n, args.stalls, args.seed)
    single, reference = _run_single(items, args.timeout)
    normal_ms = (single["seconds"] - single["timeouts"] * args.timeout) / (args.n - single["timeouts"]) * 1e3
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
    try:
        pools = [_run_pool(items, args.timeout, workers, reference) for workers in (1, 2)]
    finally:
        ray.shutdown()
    out = {
        "n": args.n,
        "stalls": args.stalls,
        "stall_input": STALL,
        "timeout_s": args.timeout,
        "cpus": args.cpus,
        "host_cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "host_parallel_speedup": _host_parallel_speedup(),
        "normal_ms_per_sample": round(normal_ms, 3),
        "mix": {kind: sum(item[2] == kind for item in items) for kind in ("exact_match", "math", "iou", "gqa")},
        "single": single,
        "pool_1": pools[0],
        "pool_2": pools[1],
        "speedup_2_vs_single": round(single["seconds"] / pools[1]["seconds"], 2),
        "speedup_1_vs_single": round(single["seconds"] / pools[0]["seconds"], 2),
        "expected_2_s": round((args.n * normal_ms / 1e3 + args.stalls * args.timeout) / 2, 2),
        "floor_2_s": round(max(-(-args.stalls // 2) * args.timeout, (args.n * normal_ms / 1e3 + args.stalls * args.timeout) / 2), 2),
    }
    if args.stall_probe > 0:
        out["stall_uncapped_s_at_least"] = round(_uncapped_stall_s(args.stall_probe), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
