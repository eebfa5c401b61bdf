"""N engine actors behind one `generate`: balanced, order-preserving, and self-healing.

Prompts are spread least-loaded first (longest-processing-time: the costliest prompt goes to the
engine with the least work so far), one call per engine, and results come back in input order.
An engine that dies (a crashed or killed actor: `RayActorError`) is replaced by a new actor built
from the same spec, given the latest weights this group loaded (or the model directory it was
last pointed at), and its share is retried; a slot that dies more than `max_restarts` times fails
the call loudly.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import time
from typing import Any, Callable, Optional, Sequence

import ray
from ray.exceptions import RayActorError

from rl.config import Config
from rl.types import Generation, ModelInput
from rollout.actor import EngineActor, actor_options
from rollout.engine import EngineSpec, NamedTensors
from rollout.sampling import SamplingSettings

logger = logging.getLogger(__name__)


def balance(costs: Sequence[float], bins: int) -> list[list[int]]:
    """Indices per bin, costliest item first to the least-loaded bin (ties: lowest bin index)."""
    heap = [(0.0, b) for b in range(bins)]
    shares: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        load, b = heapq.heappop(heap)
        shares[b].append(i)
        heapq.heappush(heap, (load + costs[i], b))
    return [sorted(share) for share in shares]


class RolloutGroup:
    """`num_engines` engine actors; `generate` has the engine's signature plus default sampling."""

    def __init__(self, spec: EngineSpec, num_engines: int = 1, *, max_restarts: int = 3, num_cpus_per_engine: float = 1.0,
                 sampling: SamplingSettings = SamplingSettings(), wait: bool = True) -> None:
        """`wait`: block until every engine is up; False returns at once (call `wait_ready` before
        using the group), so a caller can start the learner ranks while the engines load."""
        if num_engines < 1:
            raise ValueError(f"num_engines must be >= 1, got {num_engines}")
        self.spec = spec
        self.sampling = sampling
        self.max_restarts = max_restarts
        self.num_cpus_per_engine = num_cpus_per_engine
        self._weights: Optional[ray.ObjectRef] = None
        self._receiving: list[ray.ObjectRef] = []
        self.weights_dir: Optional[Callable[[], str]] = None
        self._restarts = [0] * num_engines
        self._tokens = [0] * num_engines
        self._seconds = [0.0] * num_engines
        self._wall_s = 0.0
        self.actors = [self._spawn() for _ in range(num_engines)]
        self._starting = [a.ready.remote() for a in self.actors]
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every engine started by the constructor is up (an engine that failed to start raises)."""
        ray.get(self._starting)

    @classmethod
    def from_config(cls, cfg: Config, model_dir: Optional[str] = None, wait: bool = True) -> "RolloutGroup":
        """The group `rollout.*` describes; `model_dir` overrides `model.path` (e.g. a resolved tiny model)."""
        return cls(EngineSpec.from_config(cfg, model_dir), cfg.rollout.num_engines, max_restarts=cfg.rollout.max_restarts,
                   sampling=SamplingSettings.from_config(cfg.rollout), wait=wait)

    @property
    def restarts(self) -> int:
        """Engine restarts so far, all engines together."""
        return sum(self._restarts)

    def _spawn(self) -> Any:
        return ray.remote(EngineActor).options(**actor_options(self.spec, self.num_cpus_per_engine)).remote(self.spec)

    def _restart(self, slot: int) -> None:
        """Replace a dead engine: same spec, then the latest weights this group loaded.

        Under training, `weights_dir` (set by the trainer) gives a directory holding the policy's
        current weights, so the replacement samples from the same policy as its peers; the
        trainer then re-forms the weight-sync group with it (`restarts` tells it one happened).
        """
        if self.weights_dir is not None:
            self.spec = self.spec.replace(model_dir=str(self.weights_dir()))
        self._restarts[slot] += 1
        if self._restarts[slot] > self.max_restarts:
            raise RuntimeError(f"rollout engine {slot} died {self._restarts[slot]} times (rollout.max_restarts={self.max_restarts})")
        logger.warning("rollout engine %d died; restarting it (restart %d)", slot, self._restarts[slot])
        try:
            ray.kill(self.actors[slot], no_restart=True)
        except RayActorError:
            pass
        actor = self._spawn()
        ray.get(actor.ready.remote())
        if self._weights is not None:
            ray.get(actor.load_weights.remote(self._weights))
        self.actors[slot] = actor

    def generate(
        self,
        inputs: Sequence[ModelInput],
        sampling: Optional[SamplingSettings] = None,
        prefixes: Optional[Sequence[Sequence[int]]] = None,
        **overrides: Any,
    ) -> list[list[Generation]]:
        """Per input, `sampling.n` generations, in input order, whatever engines die on the way.

        `sampling` defaults to the group's (from `rollout.*`); `overrides` replace its fields,
        e.g. `generate(prompts, n=16, seed=step)`.
        """
        sampling = dataclasses.replace(sampling or self.sampling, **overrides)
        if self.spec.backend == "vllm":
            # vLLM reads frames from mm_data; the processor's tensors would only cost transfer.
            inputs = [dataclasses.replace(mi, hf_inputs={}) for mi in inputs]
        prefixes = prefixes if prefixes is not None else [()] * len(inputs)
        costs = [len(mi.prompt_ids) + len(p) + sampling.n * sampling.max_new_tokens for mi, p in zip(inputs, prefixes)]
        results: list[Optional[list[Generation]]] = [None] * len(inputs)
        call_start = time.perf_counter()
        pending: dict[Any, tuple[int, list[int], float]] = {}

        def submit(slot: int, share: list[int]) -> None:
            ref = self.actors[slot].generate.remote([inputs[i] for i in share], sampling, [prefixes[i] for i in share])
            pending[ref] = (slot, share, time.perf_counter())

        for slot, share in enumerate(balance(costs, len(self.actors))):
            if share:
                submit(slot, share)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            slot, share, started = pending.pop(ready[0])
            try:
                outputs = ray.get(ready[0])
            except RayActorError:
                self._restart(slot)
                submit(slot, share)
                continue
            self._seconds[slot] += time.perf_counter() - started
            self._tokens[slot] += sum(len(g.token_ids) for gens in outputs for g in gens)
            for i, gens in zip(share, outputs):
                results[i] = gens
        self._wall_s += time.perf_counter() - call_start
        return results  # type: ignore[return-value]

    def load_weights(self, named_tensors: NamedTensors) -> None:
        """Load HF-named tensors into every engine; kept (in the object store) for restarts."""
        ref = ray.put(list(named_tensors))
        ray.get([a.load_weights.remote(ref) for a in self.actors])
        self._weights = ref

    def heal(self, timeout_s: float = 30.0) -> int:
        """Replace every engine that died or stopped answering (e.g. during a weight sync); returns how many.

        An engine inside a receive cannot answer until the receive ends; it ends within the sync
        deadline (loaded, or abandoned with every other member of the group), so the receives of the
        last sync are waited for first, up to `timeout_s` (pass the sync deadline plus a margin):
        a healthy engine is never killed for being busy. Then every engine must answer a ping.
        """
        deadline = time.monotonic() + timeout_s
        receiving, self._receiving = self._receiving, []
        if receiving:
            ray.wait(receiving, num_returns=len(receiving), timeout=timeout_s)
        pings = [actor.ready.remote() for actor in self.actors]
        answered, _ = ray.wait(pings, num_returns=len(pings), timeout=max(10.0, deadline - time.monotonic()))
        healed = 0
        for slot, ping in enumerate(pings):
            try:
                if ping not in answered:
                    raise ray.exceptions.GetTimeoutError(f"engine {slot} did not answer")
                ray.get(ping)
            except (RayActorError, ray.exceptions.GetTimeoutError):
                self._restart(slot)
                healed += 1
        return healed

    def sync_world_size(self) -> int:
        """How many ranks the engines bring to the weight-sync group (one per engine worker)."""
        return len(self.actors) * self.spec.tensor_parallel_size

    def init_weight_sync(self, spec: Any, metas: list) -> list[Any]:
        """Every engine worker joins the sync group (ranks 1..); returns the calls to wait on with the learner's."""
        tp = self.spec.tensor_parallel_size
        return [actor.init_weight_sync.remote(spec, 1 + slot * tp, metas) for slot, actor in enumerate(self.actors)]

    def receive_weights(self) -> list[Any]:
        """The engines' half of one sync (the learner's rank 0 sends); returns the calls to wait on."""
        self._weights = None
        self._receiving = [actor.receive_weights.remote() for actor in self.actors]
        return list(self._receiving)

    def set_model_dir(self, model_dir: str) -> None:
        """Engines built from now on (restarts) start from this directory, e.g. a new HF export."""
        self.spec = self.spec.replace(model_dir=str(model_dir))
        self._weights = None

    def stats(self) -> dict[str, Any]:
        """Per-engine tokens/s over the calls it served, restart counts, and the group's tokens per wall second."""
        return {
            "engines": [
                {"tokens": self._tokens[i], "seconds": round(self._seconds[i], 3),
                 "tokens_per_s": self._tokens[i] / self._seconds[i] if self._seconds[i] else 0.0,
                 "restarts": self._restarts[i]}
                for i in range(len(self.actors))
            ],
            "restarts": self.restarts,
            "tokens_per_s": sum(self._tokens) / self._wall_s if self._wall_s else 0.0,
        }

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
