"""The tiny job's step time by phase, and the orchestration overhead (round wall time minus its phases).

Runs the embedded tiny default (configs/tiny_cpu.yaml) for a few rounds on the real stack and reads
its metrics.jsonl. The first round (engine and learner warm-up) is excluded from the means.
`learner_dispatch` is the part of overhead spent shipping a round to the learner and back.

    python benchmarks/bench_step.py [--rounds 12] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

PHASES = ("data", "rollout", "reward", "logprobs", "update", "sync", "checkpoint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from launch.train import train
    from rl.metrics import read_metrics

    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [f"trainer.run_dir={run_dir}", f"trainer.total_rounds={args.rounds}",
                     "logging.progress=false", "logging.wandb_mode=disabled", *args.overrides]
        code = train(str(Path(__file__).resolve().parent.parent / "configs/tiny_cpu.yaml"), overrides, resume="none")
        if code:
            raise SystemExit(code)
        rows = read_metrics(run_dir)[1:]

    def mean(key: str) -> float:
        return statistics.fmean(r.get(key, 0.0) for r in rows)

    round_s = mean("time/round")
    overhead = mean("time/overhead")
    print(json.dumps({
        "benchmark": "tiny GRPO round on the real stack (CPU)",
        "rounds_measured": len(rows),
        "round_s": round(round_s, 3),
        "phases_s": {p: round(mean(f"time/{p}"), 3) for p in PHASES},
        "overhead_s": round(overhead, 3),
        "overhead_fraction": round(overhead / round_s, 4),
        "learner_dispatch_s": round(mean("time/learner_dispatch"), 3),
        "rollout_tokens_per_s": round(mean("throughput/rollout_tokens_per_s"), 1),
    }))


if __name__ == "__main__":
    main()
