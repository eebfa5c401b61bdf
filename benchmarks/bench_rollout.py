"""Rollout throughput: the engine actor vs vLLM in-process vs the transformers engine, n samples per prompt.

Same tiny random model and video prompts for all three. Also compares the two ways of asking vLLM
for a prompt's n samples: one request with SamplingParams(n) against n requests sharing the
prefill through the prefix cache. Every call uses fresh videos, so no call reads another's
prefix-cache blocks, and the variants are interleaved call by call, so load from other work on a
shared box spreads over all of them; the best run of each is the least disturbed. Prints one
JSON object.

    .venv/bin/python benchmarks/bench_rollout.py [--prompts 8] [--n 16] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.runtime import configure_environment  # noqa: E402

configure_environment("cpu")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries the one JSON object

from rollout.engine import EngineSpec  # noqa: E402
from rollout.hf_engine import HFEngine  # noqa: E402
from rollout.sampling import SamplingSettings  # noqa: E402
from rollout.toy import toy_inputs, toy_samples  # noqa: E402
from rollout.vllm_engine import VLLMEngine  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "bench"


class Prompts:
    """Fresh video prompts per call (seeded), so calls do not share cached prefixes."""

    def __init__(self, model_dir: Path, count: int, frames: int, units: tuple[int, int]) -> None:
        self.model_dir, self.count, self.frames, self.units = model_dir, count, frames, units
        self.calls = 0

    def next(self):
        self.calls += 1
        return toy_inputs(self.model_dir, toy_samples(self.count), seed=1000 * self.calls, frames=self.frames, units=self.units)


def timed_call(generate, inputs, sampling: SamplingSettings, stats=None) -> dict:
    """One call: tokens, seconds and (vLLM) prefix-cache hits."""
    before = stats() if stats else None
    start, cpu = time.perf_counter(), time.process_time()
    out = generate(inputs, sampling)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    run = {"tokens": sum(len(g.token_ids) for gens in out for g in gens), "seconds": round(elapsed, 3),
           "cpu_s_this_process": round(cpu, 3)}
    if stats:
        run["prefix_cache_hits"] = stats()["prefix_cache_hits"] - before["prefix_cache_hits"]
    return run


def summary(runs: list[dict]) -> dict:
    """Best and median tokens/s: on a shared box the best run is the least disturbed one."""
    rates = [r["tokens"] / r["seconds"] for r in runs]
    return {"best_tokens_per_s": round(max(rates), 1), "median_tokens_per_s": round(statistics.median(rates), 1), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--units", type=int, nargs=2, default=(4, 6), help="merge units per frame side (rows cols)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hf-prompts", type=int, default=2, help="the transformers engine is slow: fewer prompts")
    args = parser.parse_args()

    from rl.tiny import build_tiny

    model_dir = ARTIFACTS / "tiny-qwen2_5_vl"
    if not (model_dir / "model.safetensors").is_file():
        build_tiny("qwen2_5_vl", model_dir)
    units = tuple(args.units)
    sampling = SamplingSettings(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    prompts = Prompts(model_dir, args.prompts, args.frames, units)  # type: ignore[arg-type]
    prompt_tokens = len(prompts.next()[0].prompt_ids)
    spec = EngineSpec(model_dir=str(model_dir), max_model_len=prompt_tokens + args.max_new_tokens + 64)
    result: dict = {
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "workload": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens,
                     "prompt_tokens": prompt_tokens, "frames": args.frames, "model": "tiny qwen2_5_vl (random)"},
    }

    import ray

    from rollout.group import RolloutGroup

    engine = VLLMEngine(spec)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    group = RolloutGroup(spec, num_engines=1)

    def in_process(fanout: str):
        def call(inputs, s):
            engine.fanout = fanout  # type: ignore[assignment]
            return engine.generate(inputs, s)
        return call

    variants = {"vllm_n": (in_process("n"), engine.stats), "vllm_requests": (in_process("requests"), engine.stats),
                "engine_actor": (group.generate, None)}
    for call, _ in variants.values():
        call(prompts.next(), sampling)  # warm-up
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):  # interleaved, so a busy spell on a shared box hits every variant
        for name, (call, stats) in variants.items():
            runs[name].append(timed_call(call, prompts.next(), sampling, stats))
    load.append(os.getloadavg()[0])
    result["fanout"] = {"n": summary(runs["vllm_n"]), "requests": summary(runs["vllm_requests"])}
    result["fanout"]["faster"] = max(("n", "requests"), key=lambda m: result["fanout"][m]["best_tokens_per_s"])
    result["vllm_in_process"] = summary(runs["vllm_n" if spec.fanout == "n" else "vllm_requests"])
    result["engine_actor"] = summary(runs["engine_actor"])
    result["engine_actor"]["group_stats"] = group.stats()
    group.shutdown()
    ray.shutdown()
    del engine
    gc.collect()

    hf = HFEngine(str(model_dir))
    hf_prompts = Prompts(model_dir, args.hf_prompts, args.frames, units)  # type: ignore[arg-type]
    hf.generate(hf_prompts.next()[:1], SamplingSettings(n=2, max_new_tokens=4))
    result["transformers"] = summary([timed_call(hf.generate, hf_prompts.next(), sampling) for _ in range(2)])
    result["transformers"]["prompts"] = args.hf_prompts
    load.append(os.getloadavg()[0])
    result["host"]["loadavg_1min"] = [round(x, 2) for x in load]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
