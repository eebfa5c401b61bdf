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


def test_overlapped_rounds_and_resume_after_kill_9(tiny_qwen25, tmp_path):
    synthetic, straight, killed = tmp_path / "synthetic", tmp_path / "straight", tmp_path / "killed"
    _finish(_train(["--resume", "none", *_overrides(tiny_qwen25, synthetic, straight, 4), *OFF]))

    rows = read_metrics(straight)
    assert [r["offpolicy/lag"] for r in rows] == [0.0, 1.0, 1.0, 1.0]
    for r in rows[:-1]:  # round t+1's generation starts before round t's learner phase ends
        assert 0 <= r["timeline/next_gen_start"] < r["timeline/learner_end"]
        assert r["time/overlap"] > 0
    assert _versions(straight) == {1: 0, 2: 0, 3: 1, 4: 2}

    proc = _train(["--resume", "none", *_overrides(tiny_qwen25, synthetic, killed, 4), *OFF])
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "step-000002" / "manifest.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # round 3 is in flight (generated during round 2's learner phase)
    proc.wait()
    manifest = json.loads((killed / "checkpoints" / "step-000002" / "manifest.json").read_text())
    assert manifest["samples_consumed"] == 4, "the checkpoint holds the trained rounds only, not the one in flight"

    out = _finish(_train(["--resume", "auto", *_overrides(tiny_qwen25, synthetic, killed, 4), *OFF]))
    assert "resumed from" in out
    # samples.jsonl keeps a line per launched round: the killed run's in-flight round 3 and its
    # regeneration after the resume carry the same samples; the trained rounds are the straight run's.
    assert _samples(killed) == _samples(straight)
    assert [m["step"] for m in read_metrics(killed)] == [1, 2, 3, 4]
    a, b = read_metrics(straight), read_metrics(killed)
    for ma, mb in zip(a[:2], b[:2]):
        assert abs(ma["train/loss"] - mb["train/loss"]) < 1e-4
