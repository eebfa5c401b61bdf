"""The tiny job's step time by phase, the orchestration overhead, and what overlapping rounds buys.

Runs the embedded tiny default (configs/tiny_cpu.yaml) for a few rounds on the real stack and reads
its metrics.jsonl. The first round (engine and learner warm-up) is excluded from the means.
`learner_dispatch` is the part of overhead spent shipping a round to the learner and back.
`--off-policy 0 1` runs it synchronously and with one-step off-policy rounds (trainer.off_policy_steps)
and prints, for each, seconds per round, the engines' and learner's busy fractions, the seconds of
generation hidden under the learner phase, and that as a share of the shorter of the two phases.

    python benchmarks/bench_step.py [--rounds 12] [--off-policy 0 1] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

PHASES = ("data", "rollout", "reward", "logprobs", "update", "sync_wait", "sync", "checkpoint")


def run(rounds: int, overrides: list[str]) -> list[dict]:
    from launch.train import train
    from rl.metrics import read_metrics

    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [f"trainer.run_dir={run_dir}", f"trainer.total_rounds={rounds}",
                     "logging.progress=false", "logging.wandb_mode=disabled", *overrides]
        code = train(str(Path(__file__).resolve().parent.parent / "configs/tiny_cpu.yaml"), overrides, resume="none")
        if code:
            raise SystemExit(code)
        return read_metrics(run_dir)[1:]


def figures(rows: list[dict]) -> dict:
    def mean(key: str) -> float:
        return statistics.fmean(r.get(key, 0.0) for r in rows)

    round_s = mean("time/round")
    overhead = mean("time/overhead")
    gen_s = statistics.fmean(r["timeline/gen_end"] - r["timeline/gen_start"] for r in rows)
    learner_s = statistics.fmean(r["timeline/learner_end"] - r["timeline/learner_start"] for r in rows)
    return {
        "rounds_measured": len(rows),
        "round_s": round(round_s, 3),
        "phases_s": {p: round(mean(f"time/{p}"), 3) for p in PHASES},
        "overhead_s": round(overhead, 3),
        "overhead_fraction": round(overhead / round_s, 4),
        "learner_dispatch_s": round(mean("time/learner_dispatch"), 3),
        "rollout_tokens_per_s": round(mean("throughput/rollout_tokens_per_s"), 1),
        "generation_s": round(gen_s, 3),
        "learner_phase_s": round(learner_s, 3),
        "busy_engines": round(mean("busy/engines"), 3),
        "busy_learner": round(mean("busy/learner"), 3),
        "overlap_s": round(mean("time/overlap"), 3),
        "hidden_share_of_shorter_phase": round(mean("time/overlap") / max(min(gen_s, learner_s), 1e-9), 3),
        "max_lag": max(r["offpolicy/lag"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--off-policy", type=int, nargs="+", default=[0], choices=[0, 1])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = {"benchmark": "tiny GRPO round on the real stack (CPU)"}
    for steps in args.off_policy:
        out[f"off_policy_{steps}"] = figures(run(args.rounds, [f"trainer.off_policy_steps={steps}", *args.overrides]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
