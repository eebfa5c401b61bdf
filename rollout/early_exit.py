"""Confidence-gated early exit (method.md section 7): answer a1 when the model is sure, else think.

Greedy decoding in two stages on one sequence. Stage 1 decodes until the text `<think>` (a stop
string, kept) or the end. The confidence of a1 is exp(mean log-prob) of the tokens of a1's content
inside the first box, from the raw distribution; the fallback a1 ("Let's analyze ...") is never
confident. At confidence >= tau the answer is a1 and decoding stops. Otherwise stage 2 continues
the same sequence: the engine is given prompt + stage-1 tokens, which vLLM reads from its prefix
cache (the transformers engine from the KV cache it kept), and decodes to a2. The final answer is
the last box.

Which tokens are a1's: token k covers the characters [start_k, end_k) of the decoded response,
found by decoding the response one token longer at a time. A token counts when it overlaps a1's
content span, so a token that straddles a brace (`{[`, `]}`, `.}`) counts for its content
characters, while tokens made only of `\\boxed{` or `}` do not. A token that ends inside a
multi-byte character decodes to nothing stable yet; it is given the first character it helps to
form. An a1 with no tokens (empty box, no box, several boxes) has confidence 0.

Two confidence rules (`rule`). `span` is the above. `paper` is the official wrapper's
(VideoAuto-R1 `lmms_eval/models/simple/early_exit.py`), used when `eval.profile` is `paper`: the
first box whose content nests braces at most two levels, counted only when the response has a
second such box (a stage-1 decode, which stops at `<think>`, cannot show one: there the first box
suffices); content starting with "Let's analyze" scores -1; a choice written `(A)`, `A.`, `A)` or
`A` is cut to its letter; its tokens start at the token count of the decoded text before the
piece's first occurrence anywhere in the text (so a lone `d` is found inside `\\boxed`: the
official token-id search never matches, see `paper_token_span`) and run for the piece's own token
count; confidence is exp(mean log-prob) of those tokens, -1 when none are found. a1 is answered
when confidence >= tau.

Modes: `auto` (the above), `always-think` (decode to the end), `never-think` (stage 1 only; the
answer is a1), `post-hoc` (decode to the end, then choose by the same confidence: the public
code's benchmark path, which saves no compute; kept for comparison).

The tau curve from one pass: a full decode (`post-hoc`) records a1, its confidence, where
`<think>` opened (`think_at`, in tokens) and the final answer. `auto` at any tau is then known
without decoding again (`auto_at`): it exits on a1 with `think_at` tokens when a1 is confident,
else it continues the same greedy sequence to the full response. Greedy decoding makes stage 1 the
full decode's prefix and stage 2 its rest, so answers and token counts are those of a real `auto`
run (tested against real runs).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

from rl import grammar
from rl.types import ModelInput
from rollout.engine import Engine
from rollout.sampling import SamplingSettings, response_text

Mode = Literal["auto", "always-think", "never-think", "post-hoc"]
ConfidenceRule = Literal["span", "paper"]
MODES: tuple[str, ...] = ("auto", "always-think", "never-think", "post-hoc")
DEFAULT_TAU = {"qwen2_5_vl": 0.97, "qwen3_vl": 0.98}
THINK_OPEN = grammar.THINK_OPEN


def default_tau(family: str) -> float:
    """The paper's threshold for a model family."""
    if family not in DEFAULT_TAU:
        raise ValueError(f"no default tau for model family '{family}' (known: {', '.join(DEFAULT_TAU)})")
    return DEFAULT_TAU[family]


@dataclass
class EarlyExitResult:
    """One sample's decode: what a1 was, how sure, whether it thought, and what it cost."""

    sample_id: str
    a1: str
    confidence: float
    thought: bool
    answer: str
    """The final answer: a1 on exit (and in never-think), else the last box of the response."""
    text: str
    token_ids: list[int]
    generated_tokens: int
    latency_s: float
    """Wall time of the batched stage(s) this sample went through."""
    think_at: Optional[int] = None
    """Full decodes only: tokens up to and including the one that opens `<think>` (None: never opened)."""


def token_char_spans(tokenizer, token_ids: Sequence[int], upto: Optional[int] = None) -> list[tuple[int, int]]:
    """Character span of each token in the decoded text (see the module docstring), stopping once
    the text reaches `upto` characters (a1 sits at the start, so this stays short)."""
    spans: list[tuple[int, int]] = []
    done = 0
    for k in range(len(token_ids)):
        text = tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        stable = len(text.rstrip("\ufffd"))
        spans.append((done, stable) if stable > done else (done, done + 1))
        done = max(done, stable)
        if upto is not None and done >= upto:
            break
    return spans


def a1_confidence(tokenizer, token_ids: Sequence[int], logprobs: Sequence[float]) -> tuple[str, float]:
    """a1 and exp(mean log-prob) of its content tokens; confidence 0 when a1 has no tokens."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    span = grammar.a1_span(text)
    if span is None or span[0] == span[1]:
        return "", 0.0
    start, end = span
    picked = [lp for (s, e), lp in zip(token_char_spans(tokenizer, token_ids, upto=end), logprobs) if s < end and e > start]
    if not picked:
        return text[start:end], 0.0
    return text[start:end], math.exp(sum(picked) / len(picked))


_PAPER_BOX = re.compile(r"\\boxed\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
"""A box whose content nests braces at most two levels (the official wrapper's pattern, restated)."""
_PAPER_CHOICE = (
    re.compile(r"\s*[(\[{]\s*([A-Za-z])\s*[)\]}]"),  # (A), [b], {C}, anything may follow
    re.compile(r"\s*([A-Za-z])\s*[.)/:;\-]"),  # A. / A) / A: ..., anything may follow
    re.compile(r"\s*([A-Za-z])\s*\.?\s*$"),  # the letter alone
)


def _paper_piece(content: str) -> str:
    """The part of a1 the official rule scores: a choice's letter, else the whole content."""
    for pattern in _PAPER_CHOICE:
        match = pattern.match(content)
        if match:
            return match.group(1)
    return content


def paper_token_span(tokenizer, token_ids: Sequence[int], piece: str, text: str) -> Optional[tuple[int, int]]:
    """Where the official rule puts `piece` among the generated tokens (the module docstring).

    The official code first looks for the piece's token ids in the generated ids, but compares a
    tensor slice with a Python list, which is never equal; so the span always comes from its
    fallback, reproduced here: the first of the piece, stripped, left-stripped and with a leading
    space that occurs in the text, at the token count of the text before it.
    """
    variants = [piece, piece.strip(), piece.lstrip(), piece if piece.startswith(" ") else " " + piece]
    for variant in variants:
        at = text.find(variant) if variant else -1
        if at >= 0:
            start = len(tokenizer.encode(text[:at], add_special_tokens=False))
            end = start + len(tokenizer.encode(variant, add_special_tokens=False))
            return (start, end) if end <= len(token_ids) else None
    return None


def paper_confidence(tokenizer, token_ids: Sequence[int], logprobs: Sequence[float], text: str,
                     full: bool) -> tuple[str, float]:
    """a1 (the first box's content) and its confidence by the official rule; -1 when it has none.

    `full`: `text` is a whole response, so a second box is required (a stage-1 text stops at `<think>`).
    """
    boxes = _PAPER_BOX.findall(text)
    if not boxes or (full and len(boxes) < 2):
        return "", -1.0
    content = boxes[0]
    if content.lstrip().startswith("Let's analyze"):
        return content, -1.0
    span = paper_token_span(tokenizer, token_ids, _paper_piece(content), text)
    if span is None:
        return content, -1.0
    start, end = (max(0, min(x, len(logprobs))) for x in span)
    if end <= start:
        return content, -1.0
    return content, math.exp(sum(logprobs[start:end]) / (end - start))


def think_open_tokens(tokenizer, token_ids: Sequence[int]) -> Optional[int]:
    """How many tokens it takes to write the response's first `<think>` (the stop string of stage 1)."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    at = text.find(THINK_OPEN)
    if at < 0:
        return None
    end = at + len(THINK_OPEN)
    spans = token_char_spans(tokenizer, token_ids, upto=end)
    return next(k + 1 for k, (_, e) in enumerate(spans) if e >= end)


def auto_at(a1: str, confidence: float, think_at: Optional[int], tokens: int, full_answer: str,
            tau: float, max_new_tokens: int, rule: ConfidenceRule = "span") -> tuple[str, bool, int]:
    """(answer, thought, generated tokens) of `auto` at `tau`, from one full greedy decode.

    No `<think>`: stage 1 was the whole decode, its last box the answer. Confident a1 (or no room
    left after `<think>`): exit on a1 after `think_at` tokens. Else: the full response.
    """
    if think_at is None:
        return full_answer, False, tokens
    if is_confident(a1, confidence, tau, rule) or think_at >= max_new_tokens:
        return a1, False, think_at
    return full_answer, True, tokens


def is_confident(a1: str, confidence: float, tau: float, rule: ConfidenceRule = "span") -> bool:
    """Exit on a1: confident enough and (`span`) not the fallback; `paper` compares the confidence only."""
    if rule == "paper":
        return confidence >= tau
    return bool(a1) and not grammar.is_fallback(a1) and confidence >= tau


def final_answer(text: str) -> str:
    """The content of the last box ("" when there is none)."""
    return grammar.last_boxed(text) or ""


class EarlyExitDecoder:
    """Runs one of the four modes over batches of prompts with any engine (vLLM or transformers)."""

    def __init__(self, engine: Engine, tau: float, max_new_tokens: int = 4096, tokenizer=None,
                 rule: ConfidenceRule = "span") -> None:
        """`tokenizer` defaults to the engine's (give it for engines without one, e.g. a RolloutGroup);
        `rule` is the confidence rule (module docstring)."""
        if not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        if rule not in ("span", "paper"):
            raise ValueError(f"unknown confidence rule {rule!r}, expected span or paper")
        self.rule = rule
        self.engine = engine
        self.tau = tau
        self.max_new_tokens = max_new_tokens
        self.tokenizer = tokenizer if tokenizer is not None else engine.tokenizer

    def decode(self, inputs: Sequence[ModelInput], mode: Mode = "auto") -> list[EarlyExitResult]:
        """Greedy decode of every input in `mode`; results in input order."""
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}', expected one of {', '.join(MODES)}")
        if mode in ("always-think", "post-hoc"):
            return self._full(inputs, choose=mode == "post-hoc")
        return self._staged(inputs, continue_unsure=mode == "auto")

    def _confidence(self, gen, full: bool) -> tuple[str, float]:
        if self.rule == "paper":
            return paper_confidence(self.tokenizer, gen.token_ids, gen.logprobs, gen.text, full)
        return a1_confidence(self.tokenizer, gen.token_ids, gen.logprobs)

    def _greedy(self, inputs: Sequence[ModelInput], max_new_tokens: int, stop: tuple[str, ...] = (),
                prefixes: Optional[Sequence[Sequence[int]]] = None):
        settings = SamplingSettings(n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=stop)
        start = time.perf_counter()
        gens = [g[0] for g in self.engine.generate(inputs, settings, prefixes)]
        return gens, time.perf_counter() - start

    def _full(self, inputs: Sequence[ModelInput], choose: bool) -> list[EarlyExitResult]:
        gens, seconds = self._greedy(inputs, self.max_new_tokens)
        results = []
        for mi, g in zip(inputs, gens):
            a1, conf = self._confidence(g, full=True)
            exit_now = choose and is_confident(a1, conf, self.tau, self.rule)
            results.append(EarlyExitResult(
                sample_id=mi.sample.id, a1=a1, confidence=conf, thought=not exit_now,
                answer=a1 if exit_now else final_answer(g.text), text=g.text, token_ids=g.token_ids,
                generated_tokens=len(g.token_ids), latency_s=seconds,
                think_at=think_open_tokens(self.tokenizer, g.token_ids)))
        return results

    def _staged(self, inputs: Sequence[ModelInput], continue_unsure: bool) -> list[EarlyExitResult]:
        stage1, seconds1 = self._greedy(inputs, self.max_new_tokens, stop=(THINK_OPEN,))
        results: list[EarlyExitResult] = []
        unsure: list[int] = []
        for i, (mi, g) in enumerate(zip(inputs, stage1)):
            a1, conf = self._confidence(g, full=False)
            stopped_at_think = g.finish_reason == "stop" and THINK_OPEN in g.text
            results.append(EarlyExitResult(
                sample_id=mi.sample.id, a1=a1, confidence=conf, thought=False,
                answer=a1 if stopped_at_think else final_answer(g.text), text=g.text, token_ids=list(g.token_ids),
                generated_tokens=len(g.token_ids), latency_s=seconds1))
            room = self.max_new_tokens - len(g.token_ids)
            if continue_unsure and stopped_at_think and room > 0 and not is_confident(a1, conf, self.tau, self.rule):
                unsure.append(i)
        if not unsure:
            return results
        # One batch: the largest room left; a sample's continuation is cut to its own room, which
        # is exactly what an uninterrupted decode with max_new_tokens would have produced.
        rooms = [self.max_new_tokens - len(stage1[i].token_ids) for i in unsure]
        stage2, seconds2 = self._greedy([inputs[i] for i in unsure], max(rooms), prefixes=[stage1[i].token_ids for i in unsure])
        for i, room, g in zip(unsure, rooms, stage2):
            r = results[i]
            r.token_ids = r.token_ids + list(g.token_ids[:room])
            r.text = response_text(self.tokenizer, r.token_ids)
            r.thought = True
            r.answer = final_answer(r.text)
            r.generated_tokens = len(r.token_ids)
            r.latency_s += seconds2
        return results
