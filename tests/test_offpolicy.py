"""One-step off-policy rounds end to end (trainer.off_policy_steps=1) on the real stack.

Round t+1 is generated while the learner trains round t; every sample is at most one policy version
stale; a kill -9 while a round is in flight loses no sample and trains none twice.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from test_trainer import _finish, _overrides, _samples, _train

from rl.metrics import read_metrics

pytestmark = pytest.mark.slow

OFF = ["trainer.off_policy_steps=1"]


def _versions(run_dir) -> dict[int, int]:
    return {json.loads(line)["step"]: json.loads(line)["policy_version"] for line in (run_dir / "samples.jsonl").read_text().splitlines()}


def _stream_order(synthetic, rounds: int) -> list[list[str]]:
    """The sample ids the stream hands out, two prompts a round (what every run must train)."""
    from rl.data.loaders import load_dataset
    from rl.stream import PromptStream

    stream = PromptStream(load_dataset(synthetic / "samples.jsonl").samples, seed=0, shuffle=True)
    return [[s.id for s in stream.take(2)] for _ in range(rounds)]


def test_overlapped_rounds_and_resume_after_kill_9(tiny_qwen25, tmp_path):
    synthetic, killed = tmp_path / "synthetic", tmp_path / "killed"
    proc = _train(["--resume", "none", *_overrides(tiny_qwen25, synthetic, killed, 4), *OFF])
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "step-000002" / "manifest.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # round 3 is in flight (generated during round 2's learner phase)
    proc.wait()
    manifest = json.loads((killed / "checkpoints" / "step-000002" / "manifest.json").read_text())
    assert manifest["samples_consumed"] == 4, "the checkpoint holds the trained rounds only, not the one in flight"
    assert _versions(killed)[3] == 1, "round 3 was launched from version 1 (round 1 trained) before the kill"

    out = _finish(_train(["--resume", "auto", *_overrides(tiny_qwen25, synthetic, killed, 4), *OFF]))
    assert "resumed from" in out
    # Every round trains the stream's samples once, in order; the in-flight round 3 was regenerated
    # after the resume, from the checkpoint's version 2.
    assert _samples(killed) == _stream_order(synthetic, 4)
    assert _versions(killed) == {1: 0, 2: 0, 3: 2, 4: 2}
    rows = read_metrics(killed)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["offpolicy/lag"] for r in rows] == [0.0, 1.0, 0.0, 1.0]
    for r in (rows[0], rows[1], rows[2]):  # round t+1's generation starts before round t's learner phase ends
        assert 0 <= r["timeline/next_gen_start"] < r["timeline/learner_end"]
        assert r["time/overlap"] > 0
    assert rows[3]["timeline/next_gen_start"] == -1.0  # nothing after the last round


def test_engine_killed_in_the_background_generation_joins_the_sync_and_its_round_is_regenerated(tiny_qwen25, tmp_path, caplog):
    """An engine that dies while round 2 is generated in the background (the learner trains round 1)
    is replaced, joins the sync group before the next sync, and round 2 is generated again once every
    engine holds the current policy: the run completes, every sample trained once, in order."""
    import ray
    from test_sync_recovery import _config

    from launch.placement import init_ray
    from launch.trainer import Trainer
    from rl.data.synthetic import generate_synthetic
    from rl.inputs import InputBuilder
    from rl.stream import PromptStream
    from rollout.sampling import SamplingSettings

    cfg = _config(tiny_qwen25, tmp_path, zero_stage=2, engines=1, extra=["learner.world_size=1", "trainer.total_rounds=3", *OFF])
    samples = generate_synthetic(cfg.data.synthetic_dir, cfg.data.synthetic_num_samples, seed=0)
    init_ray(cfg, "cpu")
    trainer = Trainer(cfg, tiny_qwen25, samples)
    try:
        original, calls = trainer.rollout.generate, {"n": 0}

        def generate(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:  # round 2, launched in the background while round 1 trains
                ray.kill(trainer.rollout.actors[0], no_restart=True)
            return original(*args, **kwargs)

        trainer.rollout.generate = generate
        history = trainer.run("none")
        assert len(history) == 3
        assert history[-1]["counters/engine_restarts"] == 1.0 and history[-1]["counters/regenerated_rounds"] == 1.0
        assert any("regenerating the round" in r.getMessage() for r in caplog.records)
        assert [h["offpolicy/lag"] for h in history] == [0.0, 0.0, 1.0], "round 2 came again from the current version"
        stream = PromptStream(samples, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
        trained = [json.loads(line)["ids"] for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
        assert trained == [[s.id for s in stream.take(2)] for _ in range(3)], "every sample trained once, in order"

        # The replacement holds the learner's weights (it joined the group and took every sync since).
        builder = InputBuilder(str(tiny_qwen25), cfg.data)
        prompts = [builder.build(s) for s in samples[:2]]
        greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=8)
        gens = [g[0] for g in ray.get(trainer.rollout.actors[0].generate.remote(prompts, greedy))]
        ours = trainer.learner.logprobs(prompts, [g.token_ids for g in gens])
        assert max(abs(a - b) for g, lp in zip(gens, ours) for a, b in zip(g.logprobs, lp)) < 1e-3
    finally:
        trainer.shutdown()
        ray.shutdown()
