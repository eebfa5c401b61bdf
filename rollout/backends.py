"""Engine construction: the one place that knows every backend (`rollout.engine.Backend`)."""

from __future__ import annotations

from rollout.engine import Engine, EngineSpec
from rollout.hf_engine import HFEngine
from rollout.vllm_engine import VLLMEngine


def build_engine(spec: EngineSpec) -> Engine:
    """A vLLM or transformers engine, as the spec says."""
    if spec.backend == "hf":
        return HFEngine(spec.model_dir, device=spec.device, dtype=spec.dtype, attn_implementation=spec.attn_implementation)
    return VLLMEngine(spec)


