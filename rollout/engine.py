"""The generation engine interface, the spec an engine is built from, and what every backend shares.

Backends: `rollout/vllm_engine.py` (vLLM, CPU and GPU alike), `rollout/hf_engine.py` (transformers,
the reference); `rollout/backends.py` builds either from a spec. Prompts go in as `ModelInput`s (vLLM
is given the chat-templated ids with the vision placeholders unexpanded plus the frames, and expands
them itself to exactly `prompt_ids`); out come `Generation`s with the log-prob of every sampled
token under the distribution it was sampled from (tempered, as the learner recomputes it:
rollout.sampling). An optional per-prompt token prefix continues a response (early exit's second
stage); with prefix caching the prompt and the prefix are then read from the KV cache, not
recomputed.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Iterable, Literal, Optional, Protocol, Sequence

import torch

from rl.config import Config
from rl.runtime import Device, resolve_device
from rl.types import Generation, ModelInput
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec
from rollout.sampling import SamplingSettings

Backend = Literal["vllm", "hf"]
Fanout = Literal["n", "requests"]
VISION_BIAS = -100.0
"""vLLM clamps logit_bias to [-100, 100]: a suppressed token keeps at most e^-100 of the mass it had."""

NamedTensors = Iterable[tuple[str, torch.Tensor]]


class Engine(Protocol):
    """What the rollout group, early exit and inference need from an engine."""

    tokenizer: object

    def generate(
        self,
        inputs: Sequence[ModelInput],
        sampling: SamplingSettings,
        prefixes: Optional[Sequence[Sequence[int]]] = None,
    ) -> list[list[Generation]]:
        """Per input, `sampling.n` generations (continuing after `prefixes[i]` when given)."""
        ...

    def load_weights(self, named_tensors: NamedTensors) -> None:
        """Replace the model's weights with HF-named tensors (a subset is fine)."""
        ...

    def stats(self) -> dict[str, float]:
        """Cumulative counters: generated_tokens, busy_s, and what the engine adds."""
        ...

    def init_weight_sync(self, spec: SyncGroupSpec, rank_offset: int, metas: list[ParamMeta]) -> None:
        """Join the learner's weight-sync group (once; again after the group is re-formed)."""
        ...

    def receive_weights(self) -> int:
        """Take one weight sync (learner.sync) and drop caches computed with the old weights."""
        ...


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build an engine; small and picklable, so actors can rebuild one."""

    model_dir: str
    backend: Backend = "vllm"
    device: Device = "cpu"
    dtype: str = "float32"
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    """vLLM's enforce_eager (rollout.enforce_eager)."""
    cpu_kvcache_gib: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: Optional[int] = None
    attn_implementation: str = "sdpa"
    seed: int = 0
    resources: tuple[tuple[str, float], ...] = ()
    """Extra Ray resources the engine actor asks for (cluster.rollout_resources)."""
    log_level: str = "WARNING"
    """vLLM's logger level (`logging.engine_log_level`)."""
    fanout: Fanout = "n"
    """How a prompt's n samples are requested: one request with SamplingParams(n) (the measured
    faster one, see benchmarks/bench_rollout.py) or n requests that share the prefill through the
    prefix cache."""

    @classmethod
    def from_config(cls, cfg: Config, model_dir: Optional[str] = None) -> "EngineSpec":
        """The spec the config describes; `model_dir` overrides `model.path` (e.g. a resolved tiny model)."""
        max_new = max(cfg.rollout.max_new_tokens, cfg.infer.max_new_tokens)
        return cls(
            model_dir=str(model_dir or cfg.model.path),
            backend=cfg.rollout.backend,
            device=resolve_device(cfg.cluster.device),
            dtype=cfg.model.dtype,
            tensor_parallel_size=cfg.rollout.tensor_parallel_size,
            enable_prefix_caching=cfg.rollout.enable_prefix_caching,
            enforce_eager=cfg.rollout.enforce_eager,
            cpu_kvcache_gib=cfg.rollout.cpu_kvcache_gib,
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
            max_model_len=cfg.data.max_prompt_length + max_new,
            attn_implementation=cfg.model.attn_implementation,
            seed=cfg.trainer.seed,
            resources=tuple(sorted(cfg.cluster.rollout_resources.items())),
            log_level=cfg.logging.engine_log_level,
        )

    def replace(self, **changes) -> "EngineSpec":
        return dataclasses.replace(self, **changes)


def checked_prefixes(inputs: Sequence[ModelInput], prefixes: Optional[Sequence[Sequence[int]]]) -> Sequence[Sequence[int]]:
    """One (possibly empty) continuation prefix per input."""
    prefixes = prefixes if prefixes is not None else [()] * len(inputs)
    if len(prefixes) != len(inputs):
        raise ValueError(f"{len(prefixes)} prefixes for {len(inputs)} inputs")
    return prefixes


def prompt_seed(seed: Optional[int], sample_id: str) -> Optional[int]:
    """A per-prompt seed from the call's seed and the sample id.

    Prompts of one call must not share a seed (their samples would draw the same random numbers),
    and the seed must not depend on which engine got the prompt, so resumed and healed runs
    sample exactly what an uninterrupted run would.
    """
    if seed is None:
        return None
    return (seed + zlib.crc32(sample_id.encode())) % (1 << 31)
