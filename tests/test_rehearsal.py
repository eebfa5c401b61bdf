"""The paper's structure end to end (configs/rehearsal_cpu.yaml): the released folder as released, text +
image + video in one shuffled stream, two engines, two learner ranks at ZeRO-3, shuffled mini-batches;
two rounds on a two-node Ray cluster (learner ranks on one node, engines on the other), and one
round for Qwen3-VL. `thinkonce train --config configs/rehearsal_cpu.yaml` runs the whole of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rl.metrics import read_metrics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODALITIES = ("text", "image", "video")


def _rehearse(model_dir: Path, run_dir: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if "RAY_ADDRESS" not in (env or {}):
        env.pop("RAY_ADDRESS", None)
    args = [str(BIN / "thinkonce"), "train", "--config", "configs/rehearsal_cpu.yaml", "--resume", "none",
            f"model.path={model_dir}", f"trainer.run_dir={run_dir}", "logging.progress=false",
            "logging.wandb_mode=disabled", *extra]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_round_metrics(run_dir: Path, rounds: int) -> None:
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == list(range(1, rounds + 1))
    seen = {k.split("/")[1] for m in metrics for k in m if k.startswith("modality/")}
    assert seen == set(MODALITIES), f"the miniature release mixes all three modalities, saw {seen}"
    for m in metrics:
        assert m["train/steps_applied"] == 2 and not m["train/nonfinite_loss"]
        assert m["train/sequences"] == 8 * 4  # prompts_per_round x rollout.n, over both steps


def test_rehearsal_two_rounds_on_two_ray_nodes(tiny_qwen25, tmp_path):
    """Two rounds of the rehearsal, learner ranks pinned to one Ray node and engines to the other
    (cluster.*_resources), so nothing assumes a single node."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "resources": {"learner_node": 2}})
    try:
        rollout_node = cluster.add_node(num_cpus=4, resources={"rollout_node": 2})
        cluster.wait_for_nodes()
        summary = _rehearse(tiny_qwen25, tmp_path / "run", "trainer.total_rounds=2", f"cluster.ray_address={cluster.address}",
                            "cluster.learner_resources={learner_node: 1}", "cluster.rollout_resources={rollout_node: 1}")
        assert summary["rounds"] == 2
        _check_round_metrics(tmp_path / "run", 2)

        from ray.util.state import list_actors

        ray.init(address=cluster.address)
        nodes = {}
        for actor in list_actors(detail=True, limit=1000):
            nodes.setdefault(actor.class_name, set()).add(actor.node_id)
        assert nodes["LearnerWorker"] == {cluster.head_node.node_id}
        assert nodes["EngineActor"] == {rollout_node.node_id}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_rehearsal_qwen3_vl(tiny_qwen3, tmp_path):
    """Qwen3-VL's differences (per-video metadata, deepstack, patch 16) through the same structure (one
    engine: two are the two-node test's)."""
    _rehearse(tiny_qwen3, tmp_path / "run", "trainer.total_rounds=1", "rollout.num_engines=1")
    _check_round_metrics(tmp_path / "run", 1)
