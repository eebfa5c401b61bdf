"""Atomic run checkpoints: a directory written under a temporary name, renamed when complete.

Layout of `run_dir/checkpoints/`:

    step-000010/              complete checkpoint (renamed from .tmp-step-000010 as the last act)
        manifest.json         step, samples consumed, RNG states, config, counters, dataset fingerprint
        dataset_samples.json  each sample's id, annotation and media stamp, in order (to say what changed)
        learner/              DeepSpeed state of every rank (model, optimizer, scheduler)
        policy/               HF export of the policy (transformers and vLLM load it directly)
    .tmp-step-000020/         a save that was interrupted: ignored, removed by the next save

A kill at any moment leaves the previous complete checkpoint loadable, because only a finished
directory ever carries the `step-` name, and `latest()` only considers those with a manifest.

A resume must continue the run it resumes: `check_resume` refuses a config that changes the math or
the data order (rl.config.resume_changes) and a dataset whose fingerprint differs (ids, order,
answers, problem types, questions, media files), unless the user names the change
(`--resume-allow-changes KEY[,KEY]`, `dataset` for the data).
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
from rl.types import Sample

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


DATASET_SAMPLES = "dataset_samples.json"
DATASET_KEY = "dataset"
"""The name `--resume-allow-changes` takes to accept a different dataset."""


class ResumeRefused(ValueError):
    """Resuming would silently change the run: its config or its dataset differs from the checkpoint's."""


def sample_record(sample: Sample) -> dict[str, Any]:
    """What one sample contributes to the run: its id, annotation and media file (path, size, mtime).

    Size and modification time stand for the media's content: hashing every video at each save is
    not cheap, and a re-encoded or replaced file changes at least one of them.
    """
    record: dict[str, Any] = {"id": sample.id, "problem_type": sample.problem_type, "answer": sample.answer,
                              "question": [sample.question, sample.options], "media_path": sample.media_path, "media": None}
    if sample.media_path is not None:
        try:
            stat = os.stat(sample.media_path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size = mtime = None
        record["media"] = [size, mtime, sample.video_start, sample.video_end]
    return record


def _digest(values: Sequence[Any]) -> str:
    return hashlib.sha256("\n".join(json.dumps(v, sort_keys=True) for v in values).encode()).hexdigest()


def dataset_fingerprint(samples: Sequence[Sample], seed: int, shuffle: bool) -> dict[str, Any]:
    """What fixes the prompt stream: the ordered ids, each sample's content (`sample_record`) and the shuffle (rl.stream)."""
    ids_digest = hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest()
    return {"samples": len(samples), "ids_sha256": ids_digest, "content_sha256": _digest([sample_record(s) for s in samples]),
            "seed": seed, "shuffle": shuffle}


def check_resume(path: Path, manifest: Manifest, cfg: Config, samples: Sequence[Sample], allow: Sequence[str] = ()) -> None:
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
        now = dataset_fingerprint(samples, cfg.trainer.seed, cfg.data.shuffle)
        if any(now[key] != manifest.dataset[key] for key in ("ids_sha256", "content_sha256") if key in manifest.dataset):
            problems.append(f"dataset: {_describe_dataset_change(path, manifest.dataset, samples)}")
    elif not manifest.dataset:
        log.warning("%s has no dataset fingerprint (written before fingerprints): the data order is not checked", path)
    if problems:
        keys = ",".join([c[0] for c in changed] + ([DATASET_KEY] if any(p.startswith("dataset") for p in problems) else []))
        raise ResumeRefused(
            f"resuming {path} would silently change the run:\n  " + "\n  ".join(problems)
            + f"\nResume with the checkpoint's settings, start a new run (--resume none, another trainer.run_dir), "
            f"or accept the change with --resume-allow-changes {keys}")


CHANGE_KINDS = {"answer": "answers", "problem_type": "problem types", "question": "questions",
                "media_path": "media paths", "media": "media files (size, mtime or clip window)"}
"""Record field -> what `check_resume`'s message counts as changed."""


def _describe_dataset_change(path: Path, saved: dict[str, Any], samples: Sequence[Sample]) -> str:
    """Counts of what differs: samples then and now, ids gone and new or reordered, and per kind the samples changed."""
    head = f"{saved['samples']} samples in the checkpoint, {len(samples)} now"
    records_file = path / DATASET_SAMPLES
    if not records_file.is_file():
        return f"{head}; the samples differ"
    old = {r["id"]: r for r in json.loads(records_file.read_text())}
    now = {s.id: json.loads(json.dumps(sample_record(s))) for s in samples}
    parts = []
    gone, new = len(old.keys() - now.keys()), len(now.keys() - old.keys())
    if gone or new:
        parts.append(f"{gone} ids gone (e.g. media now unusable), {new} new")
    both = sorted(old.keys() & now.keys())
    changed = {kind: [i for i in both if old[i][key] != now[i][key]] for key, kind in CHANGE_KINDS.items()}
    if any(changed.values()):
        parts.append("changed in the samples kept: " + ", ".join(
            f"{kind} {len(ids)} (e.g. {', '.join(ids[:3])})" for kind, ids in changed.items() if ids))
    if not parts:
        parts.append("the same ids in a different order (the shuffled stream would differ)")
    return f"{head}; " + ", ".join(parts)


def write_dataset_samples(directory: Path, samples: Sequence[Sample]) -> None:
    """Every sample's `sample_record`, in order, next to the manifest (for `check_resume`'s message)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DATASET_SAMPLES).write_text(json.dumps([sample_record(s) for s in samples]))


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
