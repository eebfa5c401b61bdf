"""Placement checks fail early, naming the config keys, when the cluster cannot hold the run."""

from __future__ import annotations

import pytest
import ray

from launch.placement import check_resources, required
from rl.config import load_config


def test_required_counts_gpus_for_engines_and_learner_ranks():
    cfg = load_config("configs/qwen2_5_vl_7b.yaml")
    need = required(cfg, "cuda")
    assert need["GPU"] == 8 * 1 + 24
    assert need["CPU"] == 8 + 24 + 16
    assert "GPU" not in required(cfg, "cpu")


def test_missing_gpus_is_a_clear_early_error():
    cfg = load_config("configs/qwen2_5_vl_7b.yaml")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
    try:
        with pytest.raises(RuntimeError) as err:
            check_resources(cfg, "cuda")
        message = str(err.value)
        assert "0 GPU" in message and "needs 32" in message
        assert "rollout.num_engines" in message and "learner.world_size" in message
    finally:
        ray.shutdown()
