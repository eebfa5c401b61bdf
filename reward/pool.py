"""RewardPool: scores batches on Ray CPU actors with a hard wall-clock limit per sample.

Each worker is a synchronous Ray actor (max_concurrency=1), whose methods run on the main thread
of its own process, where RewardScorer's signal alarm works (math-verify's needs the same). The
actor is a thin shell over RewardScorer.

A batch is cut into chunks (guided self-scheduling: each chunk is the remaining work over twice the
number of workers, within [min_chunk, max_chunk]), handed to whichever worker is free. The rest of
a chunk waits behind a stalling sample, so max_chunk is small (64 samples, ~60 ms of typical work);
a dispatch costs a worker ~2 ms. A worker
streams its results back (a Ray generator) every `flush_s`, so the pool sees progress inside a
chunk and can hold each worker to a deadline:

    next message due within  timeout_s + flush_s + grace_s  of the previous one

The in-worker alarm ends a slow sample after `timeout_s` (it scores 0, `timed_out=True`). If a
worker still misses its deadline (stuck where no signal handler runs), the pool kills and replaces
it. Results are grouped by time, so the stuck sample is only known to be among the unreported
ones: the rest of the chunk is rerun with one message per sample, and if a worker is stuck again
there, the sample it is on is marked timed out, counted, and skipped (a one-off stall, such as a
paused process, costs a restart and nothing else). A worker that dies (crash, OOM,
killed) is replaced and its unreported rest retried once; a second death on it raises.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import ray
from ray.exceptions import RayActorError

from reward.scorer import Item, RewardScorer, timed_out
from rl.config import RewardConfig
from rl.problems import problem
from rl.types import RewardBreakdown


@ray.remote(max_concurrency=1, max_restarts=0)
class RewardWorker:
    """A Ray actor around RewardScorer; synchronous, so its methods run on the main thread."""

    def __init__(self, timeout_s: float, weights: dict[str, float]) -> None:
        self._scorer = RewardScorer(timeout_s, **weights)

    def ready(self) -> int:
        """Pay the scorer's first-use costs before any batch arrives; return the worker's pid."""
        self._scorer.warm_up()
        return os.getpid()

    def score_chunk(self, items: list[Item], flush_s: float) -> Iterator[list[RewardBreakdown]]:
        """Stream the chunk's results, grouped every `flush_s` seconds."""
        yield from self._scorer.score_stream(items, flush_s)


@dataclass
class _Job:
    """The unreported part [start, end) of a chunk."""

    start: int
    end: int
    retried: bool = False
    """A worker already died on it; one more death raises."""
    exact: bool = False
    """A worker was stuck in it: one message per sample, so a second stall names its sample."""


@dataclass
class _Worker:
    actor: Any
    ready_ref: Any
    """The pending ready() call; None once the worker is up."""
    deadline: float
    pid: Optional[int] = None
    job: Optional[_Job] = None
    stream: Any = None

    @property
    def waitable(self) -> Any:
        return self.ready_ref if self.ready_ref is not None else self.stream


class RewardPool:
    """`num_workers` reward actors; `score_batch` returns breakdowns in input order.

    Counters over the pool's life: `timeouts` (samples scored 0 for passing `timeout_s`) and
    `restarts` (workers replaced after dying or missing their deadline).
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        *,
        w1: float = 0.9,
        w2: float = 1.1,
        lambda_fmt: float = 1.0,
        alpha: float = 0.3,
        fallback_threshold: float = 0.7,
        num_cpus: float = 1.0,
        flush_s: float = 0.05,
        grace_s: float = 1.0,
        min_chunk: int = 8,
        max_chunk: int = 64,
        start_timeout_s: float = 120.0,
        shutdown_wait_s: float = 10.0,
    ) -> None:
        if num_workers <= 0 or timeout_s <= 0:
            raise ValueError(f"num_workers and timeout_s must be > 0, got {num_workers} and {timeout_s}")
        if not 0 < min_chunk <= max_chunk:
            raise ValueError(f"need 0 < min_chunk <= max_chunk, got {min_chunk} and {max_chunk}")
        self.timeout_s = timeout_s
        self.weights = dict(w1=w1, w2=w2, lambda_fmt=lambda_fmt, alpha=alpha, fallback_threshold=fallback_threshold)
        self.num_cpus = num_cpus
        self.flush_s = flush_s
        self.grace_s = grace_s
        self.min_chunk = min_chunk
        self.max_chunk = max_chunk
        self.start_timeout_s = start_timeout_s
        self.shutdown_wait_s = shutdown_wait_s
        self.timeouts = 0
        self.restarts = 0
        self._workers = [self._start_worker() for _ in range(num_workers)]

    @classmethod
    def from_config(cls, cfg: RewardConfig, **kwargs: Any) -> "RewardPool":
        """A pool with the config's weights, worker count and limit; kwargs as in __init__."""
        return cls(
            num_workers=cfg.num_workers,
            timeout_s=cfg.timeout_s,
            w1=cfg.w1,
            w2=cfg.w2,
            lambda_fmt=cfg.lambda_fmt,
            alpha=cfg.alpha,
            fallback_threshold=cfg.fallback_threshold,
            **kwargs,
        )

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers that are up (for operations and tests)."""
        return [worker.pid for worker in self._workers if worker.pid is not None]

    def wait_ready(self) -> None:
        """Block until every worker is up (score_batch does not need this; benchmarks do); start_timeout_s at most."""
        for worker in self._workers:
            if worker.ready_ref is not None:
                ready, _ = ray.wait([worker.ready_ref], timeout=max(0.0, worker.deadline - time.monotonic()))
                if not ready:
                    raise self._not_started()
                self._on_ready(worker)

    def score_batch(self, items: Sequence[Item]) -> list[RewardBreakdown]:
        """Score (response, answer, problem_type) items; a bad problem type or answer raises ValueError."""
        if not self._workers:
            raise RuntimeError("this RewardPool was shut down")
        for _, answer, problem_type in items:
            problem(problem_type).check(answer)
        batch = _Batch(list(items), self.min_chunk, self.max_chunk, len(self._workers))
        try:
            while batch.unscored:
                self._dispatch(batch)
                self._wait_and_handle(batch)
        except BaseException:
            for worker in self._workers:
                if worker.job is not None:
                    self._replace(worker)
            raise
        return batch.results()

    def shutdown(self) -> None:
        """Kill the workers; the pool cannot score afterwards.

        Workers still starting are given up to `shutdown_wait_s` to come up first: Ray 2.60 can lose
        the CPU lease of an actor killed while it is being handed a process, and a lost lease is
        gone from the cluster for good (seen as a later pool that never starts).
        """
        starting = [worker.ready_ref for worker in self._workers if worker.ready_ref is not None]
        if starting:
            ray.wait(starting, num_returns=len(starting), timeout=self.shutdown_wait_s)
        for worker in self._workers:
            ray.kill(worker.actor, no_restart=True)
        self._workers = []

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def _start_worker(self) -> _Worker:
        actor = RewardWorker.options(num_cpus=self.num_cpus).remote(self.timeout_s, self.weights)
        return _Worker(actor=actor, ready_ref=actor.ready.remote(), deadline=time.monotonic() + self.start_timeout_s)

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start a new one in its place."""
        ray.kill(worker.actor, no_restart=True)
        self._workers[self._workers.index(worker)] = self._start_worker()

    def _message_deadline(self) -> float:
        return time.monotonic() + self.timeout_s + self.flush_s + self.grace_s

    def _dispatch(self, batch: "_Batch") -> None:
        for worker in self._workers:
            if worker.ready_ref is not None or worker.job is not None:
                continue
            job = batch.next_job()
            if job is None:
                return
            flush_s = 0.0 if job.exact else self.flush_s
            worker.job = job
            worker.stream = worker.actor.score_chunk.remote(batch.items[job.start : job.end], flush_s)
            worker.deadline = self._message_deadline()

    def _wait_and_handle(self, batch: "_Batch") -> None:
        active = [worker for worker in self._workers if worker.waitable is not None]
        timeout = max(0.0, min(worker.deadline for worker in active) - time.monotonic())
        ready, _ = ray.wait([worker.waitable for worker in active], num_returns=1, timeout=timeout)
        for waitable in ready:
            worker = next(w for w in active if w.waitable is waitable)
            if worker.ready_ref is not None:
                self._on_ready(worker)
            else:
                self._on_message(worker, batch)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.deadline <= now and worker.job is not None:
                self._on_stuck(worker, batch)
            elif worker.deadline <= now and worker.ready_ref is not None:
                raise self._not_started()

    def _not_started(self) -> RuntimeError:
        return RuntimeError(
            f"a reward worker did not start within {self.start_timeout_s:.0f} s; each asks Ray "
            f"for {self.num_cpus} CPU (cluster: {ray.available_resources()})"
        )

    def _on_ready(self, worker: _Worker) -> None:
        try:
            worker.pid = ray.get(worker.ready_ref)
        except RayActorError as exc:
            raise RuntimeError(f"a reward worker failed to start: {exc}") from exc
        worker.ready_ref = None
        worker.deadline = math.inf

    def _on_message(self, worker: _Worker, batch: "_Batch") -> None:
        job = worker.job
        try:
            group = ray.get(next(worker.stream))
        except StopIteration:
            worker.job = worker.stream = None
            worker.deadline = math.inf
            batch.requeue(job)
            return
        except RayActorError as exc:
            self._on_death(worker, job, batch, exc)
            return
        self.timeouts += sum(result.timed_out for result in group)
        batch.place(job, group)
        worker.deadline = self._message_deadline()

    def _on_death(self, worker: _Worker, job: _Job, batch: "_Batch", exc: Exception) -> None:
        self.restarts += 1
        self._replace(worker)
        if job.retried:
            raise RuntimeError(
                f"reward workers died twice on samples {job.start}..{job.end - 1} of the batch "
                f"(first: problem_type {batch.items[job.start][2]!r}, response {batch.items[job.start][0][:200]!r}): {exc}"
            ) from exc
        job.retried = True
        batch.requeue(job)

    def _on_stuck(self, worker: _Worker, batch: "_Batch") -> None:
        job = worker.job
        self.restarts += 1
        self._replace(worker)
        if job.exact:
            batch.place(job, [timed_out()])
            self.timeouts += 1
            job.exact = False
        else:
            job.exact = True
        batch.requeue(job)


class _Batch:
    """The items of one score_batch call, their results so far, and the chunks still to hand out."""

    def __init__(self, items: list[Item], min_chunk: int, max_chunk: int, num_workers: int) -> None:
        self.items = items
        self._results: list[Optional[RewardBreakdown]] = [None] * len(items)
        self.unscored = len(items)
        self._cursor = 0
        self._requeued: deque[_Job] = deque()
        self._min_chunk = min_chunk
        self._max_chunk = max_chunk
        self._num_workers = num_workers

    def next_job(self) -> Optional[_Job]:
        """A requeued rest first; else a new chunk of ceil(remaining / (2 workers)), clamped."""
        if self._requeued:
            return self._requeued.popleft()
        remaining = len(self.items) - self._cursor
        if remaining == 0:
            return None
        size = min(remaining, max(self._min_chunk, min(self._max_chunk, math.ceil(remaining / (2 * self._num_workers)))))
        job = _Job(self._cursor, self._cursor + size)
        self._cursor += size
        return job

    def place(self, job: _Job, group: list[RewardBreakdown]) -> None:
        """Store the next results of a job, in order."""
        self._results[job.start : job.start + len(group)] = group
        job.start += len(group)
        self.unscored -= len(group)

    def requeue(self, job: _Job) -> None:
        """Hand out the job's unreported rest before any new chunk."""
        if job.start < job.end:
            self._requeued.append(job)

    def results(self) -> list[RewardBreakdown]:
        return list(self._results)
