"""The demo's RL learns the task, not only the format: a short seeded run on the `colour` family lifts
a1 accuracy above chance (1/4). The warm start's answers are random (rl.warmstart), so the gain is GRPO's."""

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
ROUNDS = 40


def test_short_demo_run_lifts_a1_accuracy_above_chance(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    run_dir = tmp_path / "run"
    args = [f"trainer.run_dir={run_dir}", f"trainer.total_rounds={ROUNDS}", "trainer.save_every=1000",
            "trainer.seed=0", "logging.progress=false", "logging.wandb_mode=disabled"]
    proc = subprocess.run([str(BIN / "thinkonce"), "train", "--config", "configs/tiny_cpu.yaml", "--resume", "none", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    json.loads(proc.stdout.strip().splitlines()[-1])
    rows = read_metrics(run_dir)
    assert len(rows) == ROUNDS
    a1 = [r["exact_match/reward/a1_acc"] for r in rows]
    first, last = sum(a1[:10]) / 10, sum(a1[-10:]) / 10
    chance = 0.25
    assert last > first and last >= chance + 0.1, f"a1 accuracy first 10 {first:.3f}, last 10 {last:.3f}, chance {chance}"
