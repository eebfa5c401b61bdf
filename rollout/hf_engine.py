"""A transformers engine with the vLLM engine's interface: the reference and a fallback backend.

vLLM's log-probs are checked against this engine's teacher-forced `score`, and `rollout.backend=hf`
runs training or inference on it where vLLM is unavailable. It decodes one prompt at a time (its
n samples as one batch), so it is slow but simple to trust.

Continuations: after a greedy single-sample decode the engine keeps the KV cache (and the prompt's
mrope offset) keyed by the token ids it covers and a digest of the pixels, so a request that continues that sequence (early
exit's second stage) feeds only the new tokens, as vLLM's prefix cache does.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from rl.family import suppressed_token_ids
from rl.mrope import load_vl_model
from rl.pixels import PixelMaker
from rl.types import Generation, ModelInput
from rl.weight_sync.broadcast import WeightReceiver
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec
from rollout.engine import NamedTensors, checked_prefixes, prompt_seed
from rollout.sampling import SamplingSettings, response_text

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class _Cached:
    cache: Any
    rope_deltas: torch.Tensor


class _StopStrings:
    """Stops a row once its generated text contains a stop string; remembers at which length.

    Only the last few tokens are decoded each step: a new occurrence must end in the newest token
    and every token decodes to at least one character (a partial UTF-8 byte shows as U+FFFD).
    """

    def __init__(self, tokenizer, stops: Sequence[str], prompt_len: int, batch: int) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.window = max(len(s) for s in self.stops) + 2
        self.prompt_len = prompt_len
        self.hit_len: list[Optional[int]] = [None] * batch

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids.shape[1] - self.prompt_len
        for row in range(input_ids.shape[0]):
            if self.hit_len[row] is not None:
                done[row] = True
                continue
            tail = input_ids[row, max(self.prompt_len, input_ids.shape[1] - self.window) :].tolist()
            text = self.tokenizer.decode(tail, skip_special_tokens=False)
            if any(stop in text for stop in self.stops):
                self.hit_len[row] = generated
                done[row] = True
        return done


def _media_digest(mi: ModelInput) -> str:
    """Identity of a prompt's pixels: equal token ids can hold different videos."""
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(mi.hf_inputs):
        value = mi.hf_inputs[key]
        if isinstance(value, torch.Tensor):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class HFEngine:
    """Sampling and teacher-forced scoring with a transformers model."""

    def __init__(
        self,
        model_dir: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        attn_implementation: str = "sdpa",
        cache_entries: int = 16,
    ) -> None:
        from transformers import AutoTokenizer

        self.device = torch.device(device)
        self.dtype = DTYPES[dtype]
        self.model = load_vl_model(model_dir, dtype=self.dtype, attn_implementation=attn_implementation).to(self.device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.suppress = suppressed_token_ids(model_dir)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []), self.tokenizer.eos_token_id})
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.cache_entries = cache_entries
        self._cache: OrderedDict[tuple[str, tuple[int, ...]], _Cached] = OrderedDict()
        self._generated_tokens = 0
        self._busy_s = 0.0
        self._continued = 0
        self._receiver: Optional[WeightReceiver] = None
        self.pixels = PixelMaker(model_dir)

    def _visual_inputs(self, mi: ModelInput, extra_tokens: int) -> dict[str, Any]:
        """The processor's tensors for prompt + `extra_tokens` text tokens.

        `mm_token_type_ids` marks which positions are image/video; response tokens are text (0).
        With it extended, Qwen's get_rope_index gives the response consecutive text positions
        after the prompt's last one, which is all the mrope position ids need.
        """
        out: dict[str, Any] = {}
        for key, value in mi.hf_inputs_with_text(extra_tokens).items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, dtype=self.dtype if value.is_floating_point() else value.dtype)
            out[key] = value
        return out

    @property
    def _base(self):
        return self.model.model

    def generate(
        self,
        inputs: Sequence[ModelInput],
        sampling: SamplingSettings,
        prefixes: Optional[Sequence[Sequence[int]]] = None,
    ) -> list[list[Generation]]:
        """Per input, `sampling.n` generations with sampled-distribution log-probs; continues after `prefixes[i]` if given."""
        prefixes = checked_prefixes(inputs, prefixes)
        inputs = self.pixels.restore(inputs)
        start = time.perf_counter()
        results = [self._generate_one(mi, list(prefix), sampling) for mi, prefix in zip(inputs, prefixes)]
        self._busy_s += time.perf_counter() - start
        return results

    @torch.no_grad()
    def _generate_one(self, mi: ModelInput, prefix: list[int], sampling: SamplingSettings) -> list[Generation]:
        from transformers import GenerationConfig, StoppingCriteriaList

        ids = list(mi.prompt_ids) + prefix
        input_ids = torch.tensor([ids], device=self.device)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        # Only single-sample greedy decodes are kept or continued: no need to hash pixels otherwise.
        media = _media_digest(mi) if sampling.n == 1 and self.cache_entries and (prefix or sampling.greedy) else ""
        cached = self._cache.pop((media, tuple(ids[:-1])), None) if prefix and media else None
        if cached is not None:
            # The cache covers all but the last token; positions continue from the prompt's mrope offset.
            kwargs["past_key_values"] = cached.cache
            self._base.rope_deltas = cached.rope_deltas
            self._continued += 1
        else:
            self._base.rope_deltas = None
            kwargs.update(self._visual_inputs(mi, len(prefix)))
        config = GenerationConfig(
            do_sample=not sampling.greedy,
            temperature=sampling.temperature if not sampling.greedy else None,
            top_p=sampling.top_p if not sampling.greedy else None,
            top_k=0,  # off, as in vLLM (None would fall back to transformers' default top-k 50)
            num_return_sequences=sampling.n,
            max_new_tokens=sampling.max_new_tokens,
            suppress_tokens=self.suppress,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_scores=True,  # the processed scores (suppression, temperature, top-p): vLLM's processed_logprobs
        )
        stops = _StopStrings(self.tokenizer, sampling.stop, len(ids), sampling.n) if sampling.stop else None
        if sampling.seed is not None:
            torch.manual_seed(prompt_seed(sampling.seed, mi.sample.id))
        out = self.model.generate(
            **kwargs, generation_config=config, stopping_criteria=StoppingCriteriaList([stops]) if stops else None
        )
        logprobs = torch.log_softmax(torch.stack(out.scores, dim=1).float(), dim=-1)
        new = out.sequences[:, len(ids) :]
        gens = []
        for row in range(new.shape[0]):
            gens.append(self._row(new[row].tolist(), logprobs[row], stops.hit_len[row] if stops else None, sampling))
        self._generated_tokens += sum(len(g.token_ids) for g in gens)
        if sampling.greedy and media:
            self._keep(media, ids + gens[0].token_ids[:-1], out.past_key_values)
        return gens

    def _row(self, tokens: list[int], logprobs: torch.Tensor, stop_len: Optional[int], sampling: SamplingSettings) -> Generation:
        """Cut one row where it ended (EOS included, as vLLM reports it) and read its log-probs."""
        end, reason = len(tokens), "length"
        eos_at = next((i for i, t in enumerate(tokens) if t in self.eos_ids), None)
        if eos_at is not None:
            end, reason = eos_at + 1, "stop"
        if stop_len is not None and stop_len <= end:
            end, reason = stop_len, "stop"
        tokens = tokens[:end]
        lps = logprobs[torch.arange(end), torch.tensor(tokens, dtype=torch.long)].tolist() if tokens else []
        text = response_text(self.tokenizer, tokens)
        if stop_len is not None and end == stop_len:
            cut = min((text.find(s) + len(s) for s in sampling.stop if s in text), default=len(text))
            text = text[:cut]
        return Generation(token_ids=tokens, logprobs=lps, text=text, finish_reason=reason)

    def _keep(self, media: str, covered: list[int], cache: Any) -> None:
        if cache is None or cache.get_seq_length() != len(covered):
            return
        self._cache[(media, tuple(covered))] = _Cached(cache, self._base.rope_deltas.clone())
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)

    @torch.no_grad()
    def score(self, model_input: ModelInput, response_ids: Sequence[int]) -> list[float]:
        """Teacher-forced log-probs of `response_ids` after the prompt (one forward pass), as `generate`
        reports them at temperature 1: vision placeholders removed (rollout.sampling)."""
        response = list(response_ids)
        if not response:
            return []
        model_input = self.pixels.restore([model_input])[0]
        ids = torch.tensor([list(model_input.prompt_ids) + response], device=self.device)
        self._base.rope_deltas = None
        logits = self.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            use_cache=False,
            logits_to_keep=len(response) + 1,
            **self._visual_inputs(model_input, len(response)),
        ).logits[0, :-1]
        targets = torch.tensor(response, device=self.device)
        logits = logits.float().index_fill(-1, torch.tensor(self.suppress, device=self.device), -torch.inf)
        return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0].tolist()

    def load_weights(self, named_tensors: NamedTensors) -> None:
        """Copy HF-named tensors into the model (names as in its state_dict); drops kept KV caches."""
        state = dict(named_tensors)
        result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise KeyError(f"unknown parameter names: {result.unexpected_keys[:5]}")
        self._cache.clear()

    def init_weight_sync(self, spec: SyncGroupSpec, rank_offset: int, metas: list[ParamMeta]) -> None:
        if self._receiver is not None:
            self._receiver.close()
        self._receiver = WeightReceiver(spec, rank_offset, metas, self.device)

    def receive_weights(self) -> int:
        named = list((name, tensor.clone()) for name, tensor in self._receiver.receive())
        self.load_weights(named)
        return len(named)

    def stats(self) -> dict[str, float]:
        return {"generated_tokens": float(self._generated_tokens), "busy_s": self._busy_s,
                "continued_from_kv_cache": float(self._continued)}
