"""Atomic run checkpoints: a directory written under a temporary name, renamed when complete.

Layout of `run_dir/checkpoints/`:

    step-000010/            complete checkpoint (renamed from .tmp-step-000010 as the last act)
        manifest.json       step, samples consumed, epoch, RNG states, config, counters
        learner/            DeepSpeed state of every rank (model, optimizer, scheduler)
        policy/             HF export of the policy (transformers and vLLM load it directly)
    .tmp-step-000020/       a save that was interrupted: ignored, removed by the next save

A kill at any moment leaves the previous complete checkpoint loadable, because only a finished
directory ever carries the `step-` name, and `latest()` only considers those with a manifest.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

_NAME = re.compile(r"^step-(\d{6,})$")


@dataclass
class Manifest:
    """What a checkpoint knows besides the learner state: enough to resume at the right sample."""

    step: int
    samples_consumed: int
    config: dict[str, Any]
    rng: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states of this process, JSON-serialisable."""
    np_state = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    if not state:
        return
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


class CheckpointManager:
    """Saves, finds and prunes checkpoints of one run directory."""

    def __init__(self, run_dir: str | Path, keep_last: int = 3) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def save(self, manifest: Manifest, write_state: Callable[[Path], None]) -> Path:
        """Write a checkpoint: `write_state(tmp_dir)` fills in the learner state, then the rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        name = f"step-{manifest.step:06d}"
        tmp = self.root / f".tmp-{name}"
        write_state(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        with open(tmp / "manifest.json", "w") as fh:
            json.dump(asdict(manifest), fh)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        self._prune()
        return final

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _NAME.match(p.name) and (p / "manifest.json").is_file()]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def latest(self) -> Optional[Path]:
        done = self.complete()
        return done[-1] if done else None

    def resolve(self, resume: str) -> Optional[Path]:
        """`auto` -> latest complete checkpoint or None; `none` -> None; else the given path."""
        if resume == "none":
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no manifest.json)")
        return path

    @staticmethod
    def read_manifest(path: Path) -> Manifest:
        return Manifest(**json.loads((path / "manifest.json").read_text()))

    def _prune(self) -> None:
        for old in self.complete()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
