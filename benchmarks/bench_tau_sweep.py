"""The tau curve of the toy model from one pass: `thinkonce eval --tau-sweep` end to end.

Writes an internal-schema JSONL of toy prompts (rollout.toy: the toy model is sure on the colour
questions, unsure on the count questions) with their videos, runs the eval CLI with `--tau-sweep`
on `rollout.num_engines` engines, copies the plot to docs/tau_sweep_toy.png and prints one JSON
object: the curve at a few taus and the wall time (contended on a shared box).

    .venv/bin/python benchmarks/bench_tau_sweep.py [--prompts 32] [--engines 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rl.runtime import configure_environment  # noqa: E402

configure_environment("cpu")

from launch.eval import run_eval  # noqa: E402
from rl.config import load_config  # noqa: E402
from rl.data.files import write_jsonl  # noqa: E402
from rollout.toy import confident_model, toy_samples, write_toy_video  # noqa: E402

ARTIFACTS = ROOT / "artifacts" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--engines", type=int, default=1)
    args = parser.parse_args()

    model = confident_model(ARTIFACTS)
    data_dir = ARTIFACTS / "tau-sweep-toy"
    samples = [dataclasses.replace(s, media_path=str(data_dir / s.media_path)) for s in toy_samples(args.prompts)]
    for i, sample in enumerate(samples):
        write_toy_video(sample.media_path, "qwen2_5_vl", 21 + i)
    data = write_jsonl(samples, data_dir / "samples.jsonl", media_root=data_dir)
    cfg = load_config(ROOT / "configs/tiny_cpu.yaml", [f"model.path={model}", "infer.max_new_tokens=96",
                                                       f"rollout.num_engines={args.engines}", "logging.progress=false"])
    summary = run_eval(cfg, str(model), str(data), ARTIFACTS / "tau-sweep-out", tau_sweep=True, batch_size=8,
                       overwrite=True, progress=False)
    curve = json.loads(Path(summary["tau_sweep"]["table"]).read_text())
    shutil.copy(summary["tau_sweep"]["plot"], ROOT / "docs" / "tau_sweep_toy.png")
    keep = ("tau", "accuracy", "think_ratio", "mean_generated_tokens", "tokens_per_correct")
    print(json.dumps({
        "prompts": args.prompts, "engines": args.engines, "wall_s": summary["wall_s"],
        "curve": [{k: p[k] for k in keep} for p in curve if p["tau"] in (0.1, 0.3, 0.5, 0.9, 0.97, 0.98, 1.0)],
        "plot": "docs/tau_sweep_toy.png",
    }))


if __name__ == "__main__":
    main()
