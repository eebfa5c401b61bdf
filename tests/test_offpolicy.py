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
