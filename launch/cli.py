"""The `thinkonce` command: train, doctor, infer, eval, filter, make-tiny, demo.

Each subcommand is a thin parser around a function elsewhere; heavy imports happen only inside the
subcommand that needs them, so `thinkonce --help` is instant. Errors in the user's input (config, data, paths, an output
folder of another run) print one line and exit with code 2, without a traceback. Ctrl-C prints one
line saying what the interrupted command kept and how to continue, and exits with code 130.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Callable, Optional

from rl.config import ConfigError


def _make_tiny(args: argparse.Namespace) -> int:
    from rl.tiny import build_tiny

    path = build_tiny(args.family, args.out, hidden=args.hidden, layers=args.layers, seed=args.seed)
    print(f"tiny {args.family} model written to {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from launch.train import train

    allow = [key for key in args.resume_allow_changes.split(",") if key]
    return train(args.config, args.overrides, resume=args.resume, resume_allow_changes=allow)


def _doctor(args: argparse.Namespace) -> int:
    from launch.doctor import doctor

    return doctor(args.config, args.overrides, as_json=args.json, memory_cap_gib=args.memory_cap_gib)


def _demo(args: argparse.Namespace) -> int:
    from launch.train import demo

    return demo(args.overrides)


def _infer(args: argparse.Namespace) -> int:
    from launch.infer import infer

    return infer(args)


def _eval(args: argparse.Namespace) -> int:
    from launch.eval import evaluate

    return evaluate(args)


def _filter(args: argparse.Namespace) -> int:
    from launch.filter import filter_dataset

    return filter_dataset(args)


def _train_kept(args: argparse.Namespace, command: str) -> str:
    """The last checkpoint of the interrupted run and the command that continues from it."""
    from rl.checkpoint import CheckpointManager
    from rl.config import load_config

    config = getattr(args, "config", None) or "configs/tiny_cpu.yaml"  # `demo` trains configs/tiny_cpu.yaml
    run_dir = Path(load_config(config, list(args.overrides)).trainer.run_dir)
    manager = CheckpointManager(run_dir)
    latest = manager.latest()
    if latest is None:
        return f"no checkpoint was written yet in {run_dir}; start again with: {command}"
    step = manager.read_manifest(latest).step
    return (f"kept checkpoint {latest} (round {step}); continue with: "
            f"thinkonce train --config {run_dir / 'config.yaml'} --resume auto")


def _eval_kept(args: argparse.Namespace, command: str) -> str:
    """The predictions written so far; the same command resumes after them."""
    path = Path(args.out) / "predictions.jsonl"
    done = sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0
    return f"kept {done} predictions in {path}; continue with the same command (it skips them): {command}"


def _nothing_kept(args: argparse.Namespace, command: str) -> str:
    """Commands that write their output only at the end."""
    return f"nothing was written (the output is written at the end); run it again: {command}"


def interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    """The one line Ctrl-C prints: what the command kept and the command that continues."""
    command = shlex.join(["thinkonce", *argv])
    try:
        return f"thinkonce: interrupted; {args.kept(args, command)}"
    except Exception as exc:  # a config that does not load cannot have started a run
        return f"thinkonce: interrupted ({exc}); run it again: {command}"


def _stop_ray() -> None:
    """Shut Ray down before the last line: its log monitor otherwise flushes worker lines after it."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thinkonce", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run GRPO training (locally, or under `ray job submit`)")
    p.add_argument("--config", default="configs/tiny_cpu.yaml", help="YAML preset in configs/ (default: %(default)s)")
    p.add_argument("--resume", default="auto",
                   help="auto (the latest complete checkpoint in trainer.run_dir; a new run when there is none), "
                        "none (a new run; an earlier one in run_dir is moved aside), or a checkpoint path (default: auto)")
    p.add_argument("--resume-allow-changes", default="", metavar="KEY[,KEY]",
                   help="config keys (or 'dataset') a resume may change although they alter the run's math or data order")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.total_rounds=20")
    p.set_defaults(func=_train, kept=_train_kept)

    p = sub.add_parser("demo", help="the tiny default end to end on CPU (the README's main command)")
    p.add_argument("overrides", nargs="*", help="dotted overrides on top of configs/tiny_cpu.yaml")
    p.set_defaults(func=_demo, kept=_train_kept)

    p = sub.add_parser("infer", help="confidence-gated early-exit inference over a dataset")
    p.add_argument("--model", required=True, help="HF model directory")
    p.add_argument("--data", required=True, help="dataset: data_config.yaml, .jsonl or .parquet")
    p.add_argument("--tau", type=float, default=None, help="confidence threshold (default by family: 0.97 / 0.98)")
    p.add_argument("--mode", default="auto", choices=["auto", "always-think", "never-think", "post-hoc"],
                   help="auto: think only when a1 is not confident (default); post-hoc: decode to the end, then choose")
    p.add_argument("--out", default=None, help="predictions JSONL path (without it only the summary is printed)")
    p.add_argument("--config", default=None, help="optional YAML preset for engine/data settings")
    p.add_argument("overrides", nargs="*", help="dotted overrides")
    p.set_defaults(func=_infer, kept=_nothing_kept)

    p = sub.add_parser("eval", help="early-exit evaluation on benchmark files over rollout.num_engines engines (resumable)")
    p.add_argument("--model", required=True, help="HF model directory (or tiny:<family>)")
    p.add_argument("--data", required=True,
                   help="annotation file (.parquet/.json/.jsonl) of VideoMME, MVBench (file or folder), Charades-STA, "
                        "ActivityNet, NExT-GQA, or internal data (.jsonl/.parquet/data_config.yaml)")
    p.add_argument("--benchmark", default="auto",
                   choices=["auto", "videomme", "mvbench", "charades_sta", "activitynet", "nextgqa", "internal"],
                   help="the file's format and scoring (default: auto, from its columns)")
    p.add_argument("--media-root", default=None, help="folder of the videos (default: the annotation file's folder)")
    p.add_argument("--out", required=True, help="output folder: predictions.jsonl, summary.json (a rerun resumes)")
    p.add_argument("--tau", type=float, default=None, help="confidence threshold (default by family: 0.97 / 0.98)")
    p.add_argument("--mode", default=None, choices=["auto", "always-think", "never-think", "post-hoc"],
                   help="default: infer.mode")
    p.add_argument("--tau-sweep", action="store_true",
                   help="one full decode; accuracy, think ratio and tokens of `auto` at every tau (table + PNG)")
    p.add_argument("--taus", default=None, help="comma-separated taus for --tau-sweep (default: 0.05..0.9, 0.91..1.0)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per engine call (the resume granularity)")
    p.add_argument("--overwrite", action="store_true", help="move an existing --out folder aside and start over")
    p.add_argument("--config", default=None, help="optional YAML preset for engine/data settings")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.num_engines=2")
    p.set_defaults(func=_eval, kept=_eval_kept)

    p = sub.add_parser("filter", help="difficulty filter: drop QA prompts the model gets all right or all wrong")
    p.add_argument("--config", default="configs/tiny_cpu.yaml",
                   help="YAML preset: model, engines and rollout sampling (default: %(default)s)")
    p.add_argument("--data", required=True, help="input dataset: data_config.yaml, .jsonl or .parquet")
    p.add_argument("--out", required=True, help="filtered dataset (.jsonl or .parquet)")
    p.add_argument("--k", type=int, default=8, help="answers sampled per prompt (paper: 8)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.num_engines=2")
    p.set_defaults(func=_filter, kept=_nothing_kept)

    p = sub.add_parser("doctor", help="check a config against its cluster, model, data, memory and checkpoint "
                                      "directory in minutes, before a long run (docs/doctor.md)")
    p.add_argument("--config", default="configs/tiny_cpu.yaml", help="YAML preset to check (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object instead of the table")
    p.add_argument("--memory-cap-gib", type=float, default=None,
                   help="memory per device to check against (default: each device's own capacity)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.micro_batch_tokens=8192")
    p.set_defaults(func=_doctor, kept=_nothing_kept)

    p = sub.add_parser("make-tiny", help="build an offline tiny random Qwen-VL model directory")
    p.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"],
                   help="architecture and chat template to copy (default: %(default)s)")
    p.add_argument("--out", required=True, help="output model directory (created)")
    p.add_argument("--hidden", type=int, default=128, help="hidden size of the language model (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="decoder layers (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")
    p.set_defaults(func=_make_tiny, kept=_nothing_kept)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input, not a bug: reported in one line (imported late: heavy modules)."""
    from launch.eval import EvalError
    from rl.checkpoint import ResumeRefused
    from rl.data.benchmarks import BenchmarkError
    from rl.data.records import DataError
    from rl.inputs import SampleError

    return (ConfigError, DataError, BenchmarkError, EvalError, SampleError, ResumeRefused, FileNotFoundError)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        _stop_ray()
        print(interrupted(args, argv), file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, user_errors()):
            raise
        print(f"thinkonce: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
