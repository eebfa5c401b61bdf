"""The data phase off the driver: prompts built in parallel by Ray actors, the next round prefetched.

Building a video prompt means decoding and resizing frames and running the processor: seconds of
CPU per prompt at the paper's budget (2 fps, up to 256 frames). Done one after another in the
driver, a round of 128 prompts keeps every GPU waiting. Here `BuilderWorker` actors (thin shells
over `rl.inputs.InputBuilder`) build a round's samples in parallel, and `RoundBuilder` starts
round t+1 while round t is still in its rollout and learner phases.

Order and position are exactly those of the serial loop: a round takes its k samples from the
stream in order; a skipped sample (bad media, prompt too long) is counted and replaced by the next
stream samples, in order. A refill for round t must come right after round t's samples, so rounds
prefetched beyond it are dropped and rebuilt after the refill. The stream position a checkpoint
records (`position`) ends at the last sample of the last round handed to the trainer, so a
prefetched round is neither lost nor counted twice: after a resume it is taken again.

The frames never pass through the driver: a build returns two objects, the prompt without its
media and the media (`mm_data`: uint8 frames or image, no float pixels, rl.pixels). The driver
fetches only the first and hands the engines and learner ranks a reference to the second
(`ModelInput.mm_ref`), which they fetch from the object store (`rl.pixels.with_media`). Task
results are owned by the caller, so the frames outlive the builder that made them.

A builder actor that dies is replaced and its samples are rebuilt (`restarts` counts them).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from rl.config import DataConfig
from rl.inputs import InputBuilder, SampleError
from rl.pixels import strip_pixels
from rl.stream import PromptStream
from rl.types import ModelInput, Sample

log = logging.getLogger("thinkonce.builders")

Built = Union[ModelInput, SampleError]


class BuilderWorker:
    """Ray actor shell around one `InputBuilder` (its own processor and clip cache)."""

    def __init__(self, model_dir: str, data: DataConfig) -> None:
        from rl.runtime import configure_environment

        configure_environment("cpu")
        self.builder = InputBuilder(model_dir, data)
        # decord's decode threads: one per CPU this actor holds (more would only oversubscribe).
        self.builder.videos.num_threads = max(1, int(data.builder_cpus))

    def ready(self) -> bool:
        return True

    def build(self, sample: Sample) -> tuple[Built, dict[str, Any]]:
        """The prompt without its media, and its media (`mm_data`): two results, so the driver takes
        the small first and passes a reference to the second on. A skip (SampleError) is returned:
        it is data, not a failure."""
        built = _build_here(self.builder, sample)
        if isinstance(built, SampleError) or not built.mm_data:
            return built, {}
        return dataclasses.replace(built, mm_data={}), built.mm_data


class BuilderPool:
    """`num_workers` builder actors; `submit` spreads samples round-robin, `get` resolves with restarts."""

    def __init__(self, model_dir: str, data: DataConfig, num_workers: int, num_cpus: float = 1.0, max_restarts: int = 3,
                 wait: bool = True) -> None:
        """`wait`: block until every worker is up; False returns at once (builds queue until then, and
        `wait_ready` blocks), so the workers can load while the engines and learner ranks do."""
        if num_workers < 1:
            raise ValueError(f"a builder pool needs at least one worker, got {num_workers}")
        self.model_dir, self.data, self.num_cpus, self.max_restarts = model_dir, data, num_cpus, max_restarts
        self.restarts = 0
        self._next = 0
        self.workers = [self._spawn() for _ in range(num_workers)]
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every worker is up (one that failed to start raises)."""
        import ray

        ray.get([w.ready.remote() for w in self.workers])

    def _spawn(self) -> Any:
        import ray

        return ray.remote(BuilderWorker).options(num_cpus=self.num_cpus, max_restarts=0).remote(self.model_dir, self.data)

    def submit(self, sample: Sample) -> tuple[int, Any, tuple[Any, Any]]:
        """Start building `sample`; returns (worker slot, worker handle, object refs of the prompt and its media)."""
        slot = self._next % len(self.workers)
        self._next += 1
        worker = self.workers[slot]
        return slot, worker, _build_remote(worker, sample)

    def get(self, sample: Sample, job: tuple[int, Any, tuple[Any, Any]]) -> Built:
        """The built prompt, its media left in the object store (`mm_ref`: the driver owns it, so it
        outlives the builder); a dead worker is replaced (once) and the sample rebuilt on the replacement."""
        import ray
        from ray.exceptions import RayActorError

        slot, worker, (ref, media) = job
        while True:
            try:
                built = ray.get(ref)
                has_media = isinstance(built, ModelInput) and built.sample.media_kind in ("image", "video")
                return dataclasses.replace(built, mm_ref=media) if has_media else built
            except RayActorError as exc:
                if self.workers[slot] is worker:
                    if self.restarts >= self.max_restarts * len(self.workers):
                        raise RuntimeError(f"input builders died {self.restarts} times; last: {exc}") from None
                    log.warning("input builder %d died (%s); replacing it and rebuilding its samples", slot, type(exc).__name__)
                    ray.kill(worker)
                    self.workers[slot] = self._spawn()
                    self.restarts += 1
                worker = self.workers[slot]
                ref, media = _build_remote(worker, sample)

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


@dataclass
class PendingRound:
    """A round's samples, taken from the stream at [start, end), with their builds in flight."""

    k: int
    start: int
    end: int
    samples: list[Sample]
    jobs: list[Any] = field(default_factory=list)


class RoundBuilder:
    """Rounds of k prompts in stream order, built by a pool (or in this process when `pool` is None)."""

    def __init__(self, stream: PromptStream[Sample], builder: Optional[InputBuilder], pool: Optional[BuilderPool],
                 on_skip: Callable[[SampleError], None], max_skips: int) -> None:
        if (builder is None) == (pool is None):
            raise ValueError("give exactly one of an in-process builder or a builder pool")
        self.stream, self.builder, self.pool = stream, builder, pool
        self.on_skip, self.max_skips = on_skip, max_skips
        self.skipped = 0
        self.position = stream.samples_consumed
        """Stream position after the last round handed out: what a checkpoint records."""
        self._pending: deque[PendingRound] = deque()

    def wait_ready(self) -> None:
        """Block until the builder pool (if any) is up."""
        if self.pool is not None:
            self.pool.wait_ready()

    def prefetch(self, k: int, depth: int) -> None:
        """Start building the next rounds until `depth` are in flight (no-op without a pool)."""
        while self.pool is not None and len(self._pending) < depth:
            self._pending.append(self._start(k))

    def next_round(self, k: int) -> list[ModelInput]:
        """The next k prompts: the oldest prefetched round, or one started now."""
        pending = self._pending.popleft() if self._pending else self._start(k)
        if pending.k != k:
            raise ValueError(f"a round of {pending.k} prompts was prefetched, {k} asked")
        prompts: list[ModelInput] = []
        while True:
            prompts.extend(self._resolve(pending))
            missing = k - len(prompts)
            if not missing:
                break
            if self.skipped > self.max_skips:
                raise RuntimeError("every sample of the dataset was skipped: check data paths and media")
            if self._pending:  # a refill must follow this round's samples: later rounds start over after it
                self.stream.samples_consumed = self._pending[0].start
                self._pending.clear()
            pending = self._start(missing)
        self.position = pending.end  # not the stream's position: rounds after this one may be in flight
        return prompts

    def _start(self, k: int) -> PendingRound:
        start = self.stream.samples_consumed
        samples = self.stream.take(k)
        pending = PendingRound(k, start, self.stream.samples_consumed, samples)
        if self.pool is not None:
            pending.jobs = [self.pool.submit(s) for s in samples]
        return pending

    def _resolve(self, pending: PendingRound) -> list[ModelInput]:
        if self.pool is not None:
            built: Sequence[Built] = [self.pool.get(s, job) for s, job in zip(pending.samples, pending.jobs)]
        else:
            built = [_build_here(self.builder, s) for s in pending.samples]
        out = []
        for item in built:
            if isinstance(item, SampleError):
                self.skipped += 1
                self.on_skip(item)
            else:
                out.append(item)
        return out

    @property
    def restarts(self) -> int:
        return self.pool.restarts if self.pool is not None else 0

    def shutdown(self) -> None:
        self._pending.clear()
        if self.pool is not None:
            self.pool.shutdown()


def _build_remote(worker: Any, sample: Sample) -> tuple[Any, Any]:
    """Object refs of the prompt and of its media, both owned by this process (the caller)."""
    return worker.build.options(num_returns=2).remote(sample)


def _build_here(builder: InputBuilder, sample: Sample) -> Built:
    """The prompt with its frames but without float pixels (rl.pixels), or the SampleError that skips it."""
    try:
        return strip_pixels(builder.build(sample))
    except SampleError as exc:
        return exc
