"""The Ray actor shell over one engine: it only builds the engine and forwards calls."""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

from rl.pixels import with_media
from rl.runtime import configure_environment, runtime_env_vars
from rl.types import Generation, ModelInput
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec
from rollout.backends import build_engine
from rollout.engine import EngineSpec, NamedTensors
from rollout.sampling import SamplingSettings


class EngineActor:
    """Holds one engine (vLLM or transformers) in its own Ray worker process."""

    def __init__(self, spec: EngineSpec) -> None:
        configure_environment(spec.device, in_actor=True, kvcache_gib=spec.cpu_kvcache_gib)
        self.engine = build_engine(spec)

    def ready(self) -> int:
        """The worker's pid, once the engine is up (also names the process to kill in tests)."""
        return os.getpid()

    def generate(
        self,
        inputs: Sequence[ModelInput],
        sampling: SamplingSettings,
        prefixes: Optional[Sequence[Sequence[int]]] = None,
    ) -> list[list[Generation]]:
        return self.engine.generate(with_media(inputs), sampling, prefixes)  # frames from the builders' nodes

    def load_weights(self, named_tensors: NamedTensors) -> None:
        self.engine.load_weights(named_tensors)

    def stats(self) -> dict[str, float]:
        return self.engine.stats()

    def init_weight_sync(self, spec: SyncGroupSpec, rank_offset: int, metas: list[ParamMeta]) -> None:
        self.engine.init_weight_sync(spec, rank_offset, metas)

    def receive_weights(self) -> int:
        return self.engine.receive_weights()


def actor_options(spec: EngineSpec, num_cpus: float = 1.0) -> dict[str, Any]:
    """Ray options of an engine actor: its devices, and the environment set before anything imports vLLM."""
    return {
        "num_cpus": num_cpus,
        "num_gpus": spec.tensor_parallel_size if spec.device == "cuda" else 0,
        "resources": dict(spec.resources),
        "max_restarts": 0,
        "runtime_env": {"env_vars": runtime_env_vars(spec.device, in_actor=True, kvcache_gib=spec.cpu_kvcache_gib)},
    }
