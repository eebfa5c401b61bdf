"""Early exit: generated tokens and wall time of auto vs always-think vs post-hoc (and never-think).

The toy model (rollout.toy) is confident on the colour half of the prompts and unsure on the
count half, so `auto` exits on about half. Each mode runs on the same prompts with the prefix and
encoder caches emptied first (stage 2 of `auto` still reads what its own stage 1 cached). `post-hoc` is the
public code's benchmark path: it decodes everything and chooses afterwards. Wall time on a shared
box swings with other work; CPU seconds of this process (the engine runs in it) measure the work
itself. Prints one JSON object.

    .venv/bin/python benchmarks/bench_early_exit.py [--prompts 32] [--backend vllm|hf]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rl.runtime import configure_environment  # noqa: E402

configure_environment("cpu")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries the one JSON object

from rollout.backends import build_engine  # noqa: E402
from rollout.early_exit import MODES, EarlyExitDecoder  # noqa: E402
from rollout.engine import EngineSpec  # noqa: E402
from rollout.toy import confident_model, toy_inputs, toy_samples  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--backend", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--tau", type=float, default=0.97)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model_dir = confident_model(ARTIFACTS, "qwen2_5_vl")
    inputs = toy_inputs(model_dir, toy_samples(args.prompts), seed=500)
    engine = build_engine(EngineSpec(model_dir=str(model_dir), backend=args.backend, max_model_len=1024))
    decoder = EarlyExitDecoder(engine, tau=args.tau, max_new_tokens=args.max_new_tokens)
    for mode in MODES:  # warm-up: compiled shapes and the processed videos are cached from here on
        decoder.decode(inputs, mode)
    modes: dict = {}
    answers: dict = {}
    for _ in range(args.repeats):
        for mode in MODES:
            if args.backend == "vllm":  # each timed run prefills and encodes its videos afresh
                engine.llm.reset_prefix_cache()  # type: ignore[attr-defined]
                engine.llm.llm_engine.reset_encoder_cache()  # type: ignore[attr-defined]
            start, cpu = time.perf_counter(), time.process_time()
            results = decoder.decode(inputs, mode)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            entry = modes.setdefault(mode, {"wall_s": [], "cpu_s": []})
            entry["wall_s"].append(round(wall, 3))
            entry["cpu_s"].append(round(cpu, 3))
            entry["generated_tokens"] = sum(r.generated_tokens for r in results)
            entry["mean_generated_tokens"] = entry["generated_tokens"] / len(results)
            entry["think_ratio"] = sum(r.thought for r in results) / len(results)
            answers[mode] = [r.answer for r in results]
    for entry in modes.values():
        entry["median_wall_s"] = sorted(entry["wall_s"])[len(entry["wall_s"]) // 2]
        entry["best_wall_s"] = min(entry["wall_s"])
        entry["median_cpu_s"] = sorted(entry["cpu_s"])[len(entry["cpu_s"]) // 2]
    auto, post = modes["auto"], modes["post-hoc"]
    print(json.dumps({
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "loadavg_1min": round(os.getloadavg()[0], 2)},
        "workload": {"prompts": args.prompts, "backend": args.backend, "tau": args.tau, "max_new_tokens": args.max_new_tokens,
                     "prompt_tokens": len(inputs[0].prompt_ids), "model": "toy confident tiny qwen2_5_vl"},
        "modes": modes,
        "auto_vs_post_hoc": {
            "same_answers": answers["auto"] == answers["post-hoc"],
            "token_ratio": round(auto["generated_tokens"] / post["generated_tokens"], 3),
            "wall_ratio_median": round(auto["median_wall_s"] / post["median_wall_s"], 3),
            "wall_ratio_best": round(auto["best_wall_s"] / post["best_wall_s"], 3),
            "cpu_ratio_median": round(auto["median_cpu_s"] / post["median_cpu_s"], 3),
        },
    }))


if __name__ == "__main__":
    main()
