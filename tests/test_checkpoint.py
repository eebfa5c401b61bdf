"""Run checkpoints are atomic and resumable; the prompt stream resumes at the right sample."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rl.checkpoint import CheckpointManager, Manifest, capture_rng, restore_rng
from rl.stream import PromptStream


def _write(payload: bytes):
    def write_state(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "state.bin").write_bytes(payload)
    return write_state


def test_save_then_resume_auto_picks_latest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3):
        mgr.save(Manifest(step=step, samples_consumed=step * 4, config={}), _write(bytes([step])))
    done = mgr.complete()
    assert [p.name for p in done] == ["step-000002", "step-000003"]
    assert mgr.resolve("auto").name == "step-000003"
    assert mgr.read_manifest(mgr.resolve("auto")).samples_consumed == 12
    assert mgr.resolve("none") is None


def test_resume_path_must_be_complete(tmp_path):
    mgr = CheckpointManager(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        mgr.resolve(str(tmp_path / "nowhere"))


def _slow_save(run_dir: str) -> None:
    def write_state(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "partial.bin").write_bytes(b"x" * 1000)
        time.sleep(60)
    CheckpointManager(run_dir).save(Manifest(step=2, samples_consumed=8, config={}), write_state)


def test_kill_mid_write_leaves_previous_loadable(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(Manifest(step=1, samples_consumed=4, config={}), _write(b"good"))
    proc = mp.get_context("spawn").Process(target=_slow_save, args=(str(tmp_path),))
    proc.start()
    deadline = time.time() + 60
    while not list(mgr.root.glob(".tmp-step-000002/partial.bin")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    latest = mgr.resolve("auto")
    assert latest.name == "step-000001"
    assert (latest / "state.bin").read_bytes() == b"good"
    mgr.save(Manifest(step=3, samples_consumed=12, config={}), _write(b"next"))
    assert not list(mgr.root.glob(".tmp-*")), "the interrupted temporary directory is cleaned up"


def test_rng_round_trip():
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    state = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9); np.random.seed(9); torch.manual_seed(9)
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_stream_resumes_in_the_same_order():
    items = list(range(10))
    straight = PromptStream(items, seed=5)
    full = [straight.take(3) for _ in range(7)]
    first = PromptStream(items, seed=5)
    part = [first.take(3) for _ in range(3)]
    resumed = PromptStream(items, seed=5, samples_consumed=first.samples_consumed)
    part += [resumed.take(3) for _ in range(4)]
    assert part == full
    assert sorted(sum(full, [])[:10]) == items, "an epoch visits every item once"
    assert sum(full, [])[:10] != items, "shuffled"


def test_stream_resume_at_epoch_boundary_starts_next_epoch():
    items = list(range(6))
    s = PromptStream(items, seed=0)
    s.take(6)
    resumed = PromptStream(items, seed=0, samples_consumed=6)
    assert resumed.epoch == 1
    nxt = resumed.take(6)
    assert sorted(nxt) == items and nxt == s.take(6)
    assert nxt != PromptStream(items, seed=0).take(6), "epoch 1 is a new permutation"


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        PromptStream([])
