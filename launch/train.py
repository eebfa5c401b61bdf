"""`thinkonce train`: load the config, prepare the cluster, model and data, and run the trainer."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Sequence

from rl.config import load_config


def train(config_path: str, overrides: Sequence[str], resume: str = "auto", resume_allow_changes: Sequence[str] = ()) -> int:
    """Run GRPO training; returns the process exit code. `resume_allow_changes`: see rl.checkpoint.check_resume."""
    from launch.placement import check_resources, init_ray
    from rl.data.loaders import load_from_config
    from rl.runtime import configure_environment, resolve_device
    from rl.warmstart import resolve_model_path

    cfg = load_config(config_path, list(overrides))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    device = resolve_device(cfg.cluster.device)
    configure_environment(device, kvcache_gib=cfg.rollout.cpu_kvcache_gib)
    start = time.time()
    model_dir = resolve_model_path(cfg.model, cfg.data, seed=cfg.trainer.seed)
    data = load_from_config(cfg.data)
    if data.report.total:
        logging.getLogger("thinkonce").warning("data: %s", data.report.summary())
    init_ray(cfg, device)
    check_resources(cfg, device)

    from rl.trainer import LearnerDied, Trainer

    trainer = Trainer(cfg, model_dir, data.samples, resume_allow_changes=resume_allow_changes)
    try:
        history = trainer.run(resume)
    except LearnerDied as exc:
        print(f"thinkonce: {exc}", file=sys.stderr)
        return 3
    finally:
        trainer.shutdown()
    print(json.dumps(summary(history, time.time() - start)))
    return 0


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
