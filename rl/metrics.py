"""Training metrics: what a round measured, and where it goes (metrics.jsonl, wandb, a progress bar).

wandb runs offline when no WANDB_API_KEY is set (an unreachable server blocks about 100 s before
failing); tqdm draws the progress bar with its ETA on a terminal, `LineProgress` writes a line per
update elsewhere (a log file, `ray job logs`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from rl.types import Generation, RewardBreakdown, Sample

log = logging.getLogger("thinkonce.metrics")


class PhaseTimer:
    """Seconds per named phase of one round (data, rollout, reward, logprobs, update, sync, checkpoint)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def as_metrics(self) -> dict[str, float]:
        return {f"time/{k}": v for k, v in self.seconds.items()}


def rollout_metrics(
    samples: Sequence[Sample],
    generations: Sequence[Generation],
    rewards: Sequence[RewardBreakdown],
) -> dict[str, float]:
    """Reward total and parts (overall, per problem type, per modality), response lengths, truncation, timeouts.

    `samples[i]` is the prompt of `generations[i]` (already repeated G times).
    """
    n = len(rewards)
    out: dict[str, float] = {}

    def parts(idx: list[int], prefix: str) -> None:
        k = max(len(idx), 1)
        out[f"{prefix}reward/total"] = sum(rewards[i].total for i in idx) / k
        out[f"{prefix}reward/a1_acc"] = sum(rewards[i].a1 > 0.5 for i in idx) / k
        out[f"{prefix}reward/a2_acc"] = sum(rewards[i].a2 > 0.5 for i in idx) / k
        out[f"{prefix}reward/a1"] = sum(rewards[i].a1 for i in idx) / k
        out[f"{prefix}reward/a2"] = sum(rewards[i].a2 for i in idx) / k
        out[f"{prefix}reward/format_rate"] = sum(rewards[i].format for i in idx) / k
        out[f"{prefix}reward/fallback_rate"] = sum(rewards[i].fallback for i in idx) / k

    parts(list(range(n)), "")
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_type[s.problem_type].append(i)
    for ptype, idx in sorted(by_type.items()):
        parts(idx, f"{ptype}/")
    by_modality: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        by_modality["text" if s.media_kind == "none" else s.media_kind].append(i)
    for modality, idx in sorted(by_modality.items()):
        parts(idx, f"modality/{modality}/")
    lengths = [len(g.token_ids) for g in generations]
    out["response/length_mean"] = sum(lengths) / max(n, 1)
    out["response/length_max"] = float(max(lengths, default=0))
    out["response/truncation_rate"] = sum(g.finish_reason == "length" for g in generations) / max(n, 1)
    out["reward/timeouts"] = float(sum(r.timed_out for r in rewards))
    return out


class MetricsLogger:
    """One line per round in `run_dir/metrics.jsonl`, the same to wandb, and a tqdm bar with ETA."""

    def __init__(self, run_dir: str | Path, total_rounds: int, start_round: int, config: dict[str, Any],
                 wandb_project: str = "thinkonce", wandb_mode: str = "auto", progress: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._bar = progress_bar(total_rounds, initial=start_round, desc="GRPO rounds", unit="round", enabled=progress)
        self._wandb = _start_wandb(run_dir, wandb_project, wandb_mode, config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, "time": time.time(), **metrics}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb_call(lambda run: run.log(metrics, step=step), step)
        self._bar.set_postfix(reward=f"{metrics.get('reward/total', float('nan')):.3f}", loss=f"{metrics.get('train/loss', float('nan')):.4f}")
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
        if self._wandb is not None:
            self._wandb_call(lambda run: run.finish(), None)

    def _wandb_call(self, call: Any, step: Optional[int]) -> None:
        """Run `call(run)`; if wandb's service process is gone, say so once and stop using wandb.

        `ray job stop` sends its SIGTERM to every process of the job, wandb's service process
        included, which then ends at once; the trainer still finishes its round and checkpoint, and
        metrics.jsonl keeps every round. Tearing wandb down here also drops its exit hook, which
        would otherwise print the same ConnectionResetError traceback at exit.
        """
        import wandb

        try:
            call(self._wandb)
        except (ConnectionError, OSError) as exc:
            self._wandb = None
            log.warning("wandb stopped (%s: its service process ended, e.g. on the SIGTERM of `ray job stop`); "
                        "%s; metrics.jsonl keeps every round", type(exc).__name__,
                        f"it holds rounds before {step}" if step is not None else "it holds every round")
            try:
                wandb.teardown()
            except (ConnectionError, OSError):
                pass


LOG_EVERY_S = 10.0
"""Off a terminal, a progress line at most this often (and at the end)."""


class LineProgress:
    """A progress report for logs: a line for the first update, then at most every LOG_EVERY_S
    seconds, and for the last, with an ETA measured from its own start. tqdm's in-place redraws
    (carriage returns) run together on one line in a file or under `ray job logs`."""

    def __init__(self, total: int, *, initial: int = 0, desc: str, unit: str) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self._initial = initial
        self._start = self._last = time.perf_counter()
        self._postfix = ""

    def set_postfix(self, **values: Any) -> None:
        self._postfix = "".join(f", {k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.n >= self.total or now - self._last >= LOG_EVERY_S or self.n - n == self._initial:
            self._last = now
            done, elapsed = self.n - self._initial, now - self._start
            eta = f", ETA {elapsed / done * (self.total - self.n):.0f} s" if done and self.n < self.total else ""
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}s, {elapsed:.0f} s{eta}{self._postfix}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress_bar(total: int, *, initial: int = 0, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar on a terminal, `LineProgress` elsewhere; start it when the work starts (after
    engines load), so its ETA measures the work and not the start-up."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return LineProgress(total, initial=initial, desc=desc, unit=unit)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True)


def _start_wandb(run_dir: str | Path, project: str, mode: str, config: dict[str, Any]) -> Optional[Any]:
    if mode == "disabled":
        return None
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    import wandb

    return wandb.init(project=project, dir=str(run_dir), mode=mode, config=config, resume="allow",
                      id=Path(run_dir).resolve().name.replace("/", "-"), settings=wandb.Settings(silent=True))


RUN_FILES = ("metrics.jsonl", "checkpoints", "samples.jsonl", "wandb", "config.yaml", "policy-for-engine-restart")
"""What a training run writes into its run_dir."""


def move_aside(path: str | Path) -> Path:
    """Rename `path` to `<path>.old-<UTC time>` (never deletes anything); returns the new name."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.old-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.old-{stamp}-{n}")
        n += 1
    shutil.move(str(path), str(target))
    return target


def set_aside_earlier_run(run_dir: str | Path) -> Optional[Path]:
    """Before a new (not resumed) run: move a run_dir holding an earlier run's files aside, so
    metrics.jsonl never mixes two runs' rows under the same step numbers. Returns where it went."""
    run_dir = Path(run_dir)
    if not any((run_dir / name).exists() for name in RUN_FILES):
        return None
    return move_aside(run_dir)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rounds logged so far (a resumed run appends; the last record of a step wins)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[rec["step"]] = rec
    return [by_step[k] for k in sorted(by_step)]
