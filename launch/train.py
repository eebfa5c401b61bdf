"""`thinkonce train`: load the config, prepare the cluster, model and data, and run the trainer."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from rl.config import Config, load_config
from rl.types import Sample


def train(config_path: str, overrides: Sequence[str], resume: str = "auto", resume_allow_changes: Sequence[str] = ()) -> int:
    """Run GRPO training; returns the process exit code. The last stdout line is `summary`'s JSON.
    `resume_allow_changes`: see rl.checkpoint.check_resume."""
    run = _run(config_path, overrides, resume, resume_allow_changes)
    if isinstance(run, int):
        return run
    _, _, history, wall_s = run
    _disconnect_ray()
    print(json.dumps(summary(history, wall_s)))
    return 0


def _disconnect_ray() -> None:
    """Leave the Ray cluster, so no worker's late log line lands after the summary (Ray prints worker
    output on the driver's stdout from a background thread until the driver disconnects)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def demo(overrides: Sequence[str]) -> int:
    """`thinkonce demo`: train the tiny default, then say what it learned (`demo_report`) and
    end with the same JSON line as `train`."""
    run = _run(DEMO_CONFIG, overrides, "none")
    if isinstance(run, int):
        return run
    cfg, samples, history, wall_s = run
    report = demo_report(cfg, samples, history)
    _disconnect_ray()
    print(format_demo_report(report))
    print(json.dumps({**summary(history, wall_s), "demo": report}))
    return 0


DEMO_CONFIG = "configs/tiny_cpu.yaml"


def _run(config_path: str, overrides: Sequence[str], resume: str, resume_allow_changes: Sequence[str] = ()):
    """Prepare and train; (config, training samples, per-round metrics, wall seconds) or an exit code."""
    from launch.placement import check_resources, init_ray
    from rl.checkpoint import CheckpointManager, check_resume
    from rl.data.loaders import load_from_config
    from rl.data.records import DataError
    from rl.metrics import set_aside_earlier_run
    from rl.runtime import configure_environment, resolve_device
    from rl.warmstart import resolve_model_path

    cfg = load_config(config_path, list(overrides))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = resolve_device(cfg.cluster.device)
    configure_environment(device, kvcache_gib=cfg.rollout.cpu_kvcache_gib)
    start = time.time()
    data = load_from_config(cfg.data)
    if data.report.total:
        logging.getLogger("thinkonce").warning("data: %s", data.report.summary())
    if not data.samples:
        raise DataError(f"no usable training samples in {cfg.data.train} ({data.report.summary()})")
    checkpoints = CheckpointManager(cfg.trainer.run_dir)
    resume_from = checkpoints.resolve(resume)
    if resume_from is not None:  # refuse a silently changed run before any actor starts (Trainer checks again)
        check_resume(resume_from, checkpoints.read_manifest(resume_from), cfg, data.samples,
                     resume_allow_changes)
    fresh = resume == "none" or (resume == "auto" and resume_from is None)
    if resume == "auto" and resume_from is None:
        logging.getLogger("thinkonce").info("--resume auto: no complete checkpoint in %s; starting a new run "
                                            "from round 0", Path(cfg.trainer.run_dir).resolve())
    if fresh:
        moved = set_aside_earlier_run(cfg.trainer.run_dir)
        if moved is not None:
            logging.getLogger("thinkonce").info("%s held an earlier run; moved it to %s", cfg.trainer.run_dir, moved)
    init_ray(cfg, device)
    check_resources(cfg, device)  # before the model is built or warm-started (minutes at scale)
    model_dir = resolve_model_path(cfg.model, cfg.data, seed=cfg.trainer.seed)

    from launch.trainer import LearnerDied, Trainer

    trainer = Trainer(cfg, model_dir, data.samples, resume_allow_changes=resume_allow_changes)
    try:
        history = trainer.run(resume)
    except LearnerDied as exc:
        print(f"thinkonce: {exc}", file=sys.stderr)
        return 3
    finally:
        trainer.shutdown()
    return cfg, data.samples, history, time.time() - start


def summary(history: list[dict[str, float]], wall_s: float) -> dict[str, float]:
    """The learning figure: mean reward of the first 10 vs the last 10 rounds of this invocation."""
    rewards = [h["reward/total"] for h in history]
    k = min(10, len(rewards) // 2) or 1
    return {
        "rounds": len(rewards),
        "reward_first10": sum(rewards[:k]) / k if rewards else float("nan"),
        "reward_last10": sum(rewards[-k:]) / k if rewards else float("nan"),
        "wall_s": round(wall_s, 1),
    }


def first_last(history: list[dict[str, float]], key: str) -> tuple[float, float]:
    """Mean of `key` over the first and the last min(10, rounds/2) rounds that logged it."""
    values = [h[key] for h in history if key in h]
    if not values:
        return float("nan"), float("nan")
    k = min(10, len(values) // 2) or 1
    return sum(values[:k]) / k, sum(values[-k:]) / k


def demo_report(cfg: Config, samples: Sequence[Sample], history: list[dict[str, float]]) -> dict[str, Any]:
    """First-10 vs last-10 rounds (reward, format rate, a1/a2 accuracy per problem type beside its
    chance level), then early exit of the trained policy on a held-out synthetic split (`auto`
    and `post-hoc`, one engine): accuracy, think ratio, mean generated tokens."""
    from rl.checkpoint import CheckpointManager
    from rl.data.synthetic import chance

    report: dict[str, Any] = {"rounds": len(history)}
    for key in ("reward/total", "reward/format_rate"):
        report[key] = first_last(history, key)
    by_type: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        by_type[s.problem_type].append(chance(s))
    report["per_problem_type"] = {
        ptype: {"chance": sum(c) / len(c), "a1_acc": first_last(history, f"{ptype}/reward/a1_acc"),
                "a2_acc": first_last(history, f"{ptype}/reward/a2_acc")}
        for ptype, c in sorted(by_type.items())
    }
    checkpoint = CheckpointManager(cfg.trainer.run_dir).latest()
    if checkpoint is not None:
        report["heldout"] = heldout_early_exit(cfg, str(checkpoint / "policy"))
    return report


def heldout_early_exit(cfg: Config, policy_dir: str) -> dict[str, Any]:
    """`auto` vs `post-hoc` on a synthetic split generated with another seed (launch.infer, one engine)."""
    import os

    from launch.infer import run_inference
    from rl.data.synthetic import generate_synthetic
    from rollout.backends import build_engine
    from rollout.engine import EngineSpec

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    heldout_dir = Path(cfg.data.synthetic_dir + "-heldout")
    generate_synthetic(heldout_dir, HELDOUT_SAMPLES, seed=cfg.data.seed + 1, kinds=tuple(cfg.data.synthetic_kinds),
                       shuffle_options=cfg.data.synthetic_shuffle_options)
    spec = EngineSpec.from_config(cfg, policy_dir)
    engine = build_engine(spec.replace(max_model_len=cfg.data.max_prompt_length + cfg.infer.max_new_tokens))
    out: dict[str, Any] = {"n": HELDOUT_SAMPLES, "seed": cfg.data.seed + 1}
    for mode in ("auto", "post-hoc"):
        result = run_inference(cfg, policy_dir, str(heldout_dir / "samples.jsonl"), mode=mode, engine=engine)
        out["tau"] = result["tau"]
        out[mode] = {k: result["overall"][k] for k in ("accuracy", "think_ratio", "mean_generated_tokens")}
        out[mode]["per_problem_type"] = {k: v["accuracy"] for k, v in result["per_problem_type"].items()}
    return out


HELDOUT_SAMPLES = 64


def format_demo_report(report: dict[str, Any]) -> str:
    """The report as a few aligned lines for a person."""
    lines = [f"\nThinkOnce demo: what {report['rounds']} GRPO rounds changed (first 10 rounds -> last 10)"]
    for key, name in (("reward/total", "total reward"), ("reward/format_rate", "format rate")):
        a, b = report[key]
        lines.append(f"  {name:<14} {a:6.3f} -> {b:6.3f}")
    lines.append(f"  {'problem type':<14} {'chance':>6}   {'a1 accuracy':>16}   {'a2 accuracy':>16}")
    for ptype, r in report["per_problem_type"].items():
        (a1a, a1b), (a2a, a2b) = r["a1_acc"], r["a2_acc"]
        lines.append(f"  {ptype:<14} {r['chance']:6.3f}   {a1a:6.3f} -> {a1b:6.3f}   {a2a:6.3f} -> {a2b:6.3f}")
    h = report.get("heldout")
    if h:
        lines.append(f"Early exit on a held-out split ({h['n']} samples, seed {h['seed']}, tau {h['tau']}):")
        lines.append(f"  {'mode':<10} {'accuracy':>8} {'think ratio':>12} {'mean tokens':>12}")
        for mode in ("auto", "post-hoc"):
            m = h[mode]
            lines.append(f"  {mode:<10} {m['accuracy']:8.3f} {m['think_ratio']:12.3f} {m['mean_generated_tokens']:12.1f}")
        lines.append("  think ratio: answers taken after the thinking; post-hoc decodes every response to the end "
                     "(its tokens), then answers from a1 when confident")
    return "\n".join(lines)
