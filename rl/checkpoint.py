"""Atomic run checkpoints: a directory written under a temporary name, renamed when complete.

Layout of `run_dir/checkpoints/`:

    step-000010/            complete checkpoint (renamed from .tmp-step-000010 as the last act)
        manifest.json       step, samples consumed, RNG states, config, counters, dataset fingerprint
        dataset_ids.json    the dataset's sample ids in order (to say what changed when it differs)
        learner/            DeepSpeed state of every rank (model, optimizer, scheduler)
        policy/             HF export of the policy (transformers and vLLM load it directly)
    .tmp-step-000020/       a save that was interrupted: ignored, removed by the next save

A kill at any moment leaves the previous complete checkpoint loadable, because only a finished
directory ever carries the `step-` name, and `latest()` only considers those with a manifest.

A resume must continue the run it resumes: `check_resume` refuses a config that changes the math or
the data order (rl.config.resume_changes) and a dataset whose fingerprint differs, unless the user
names the change (`--resume-allow-changes KEY[,KEY]`, `dataset` for the data).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from rl.config import Config, flat_keys, resume_changes

log = logging.getLogger("thinkonce.checkpoint")

_NAME = re.compile(r"^step-(\d{6,})$")


@dataclass
class Manifest:
    """What a checkpoint knows besides the learner state: enough to resume at the right sample."""

    step: int
    samples_consumed: int
    config: dict[str, Any]
    rng: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    """`dataset_fingerprint` of the stream the run consumed."""


DATASET_IDS = "dataset_ids.json"
DATASET_KEY = "dataset"
"""The name `--resume-allow-changes` takes to accept a different dataset."""


class ResumeRefused(ValueError):
    """Resuming would silently change the run: its config or its dataset differs from the checkpoint's."""


def dataset_fingerprint(ids: Sequence[str], seed: int, shuffle: bool) -> dict[str, Any]:
    """What fixes the order of the prompt stream: the ordered sample ids and the shuffle (rl.stream)."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return {"samples": len(ids), "ids_sha256": digest, "seed": seed, "shuffle": shuffle}


def check_resume(path: Path, manifest: Manifest, cfg: Config, ids: Sequence[str], allow: Sequence[str] = ()) -> None:
    """Refuse (ResumeRefused) to resume `manifest` with a config or a dataset that changes the run.

    `allow`: config keys (and `dataset`) the user accepts changing; naming a key that is not a
    config key is refused too, so a typo cannot let a change through.
    """
    known = set(flat_keys(cfg.model_dump(mode="json"))) | {DATASET_KEY}
    unknown = [key for key in allow if key not in known]
    if unknown:
        raise ResumeRefused(f"--resume-allow-changes: {', '.join(unknown)} is not a config key (nor '{DATASET_KEY}')")
    problems = []
    changed = [c for c in resume_changes(manifest.config, cfg.model_dump(mode="json")) if c[0] not in allow]
    for key, old, new in changed:
        problems.append(f"config key {key}: {old!r} in the checkpoint, {new!r} now")
    if manifest.dataset and DATASET_KEY not in allow:
        now = dataset_fingerprint(ids, cfg.trainer.seed, cfg.data.shuffle)
        if now["ids_sha256"] != manifest.dataset["ids_sha256"]:
            problems.append(f"dataset: {_describe_dataset_change(path, manifest.dataset, ids)}")
    elif not manifest.dataset:
        log.warning("%s has no dataset fingerprint (written before fingerprints): the data order is not checked", path)
    if problems:
        keys = ",".join([c[0] for c in changed] + ([DATASET_KEY] if any(p.startswith("dataset") for p in problems) else []))
        raise ResumeRefused(
            f"resuming {path} would silently change the run:\n  " + "\n  ".join(problems)
            + f"\nResume with the checkpoint's settings, start a new run (--resume none, another trainer.run_dir), "
            f"or accept the change with --resume-allow-changes {keys}")


def _describe_dataset_change(path: Path, saved: dict[str, Any], ids: Sequence[str]) -> str:
    """Counts of what differs: samples then and now, ids gone and new, or the same ids reordered."""
    head = f"{saved['samples']} samples in the checkpoint, {len(ids)} now"
    ids_file = path / DATASET_IDS
    if not ids_file.is_file():
        return f"{head}; the sample ids differ"
    old = json.loads(ids_file.read_text())
    gone, new = len(set(old) - set(ids)), len(set(ids) - set(old))
    if not gone and not new:
        return f"{head}; the same ids in a different order (the shuffled stream would differ)"
    return f"{head}; {gone} ids gone (e.g. media now unusable), {new} new"


def write_dataset_ids(directory: Path, ids: Sequence[str]) -> None:
    """The ordered sample ids next to the manifest (for `check_resume`'s message)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DATASET_IDS).write_text(json.dumps(list(ids)))


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
