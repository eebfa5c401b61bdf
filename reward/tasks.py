"""Task rewards R_task(answer, ground truth) per problem type (method.md section 3).

    exact_match  1 if normalised strings are equal, else 0
    math         1 if math-verify finds verify(parse(gt), parse(pred)), both parsed as LaTeX
    iou          |pred ∩ gt| / |pred ∪ gt| of the first interval in pred, max over gt segments
    gqa          exact_match(first part) + iou(last part), splitting pred on "<>"; in [0, 2]

An unknown problem type or a ground truth of the wrong shape is a data error and raises
ValueError; a malformed prediction scores 0.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any, Optional, Sequence

from math_verify import parse, verify

from rl.types import PROBLEM_TYPES, Answer

YES = frozenset({"yes", "y", "true", "t", "ok", "okay"})
NO = frozenset({"no", "n", "false", "f"})
"""Whole-string synonyms; the one-letter ones only apply with punctuation around them (`"y."`), since a
lone letter is a choice letter first."""
GQA_SEPARATOR = "<>"
MATH_TIMEOUT_S = 5
"""math-verify's own per-call alarm (seconds) when the caller does not enforce one."""

_LETTER = re.compile(r"\(([a-z])\)|\[([a-z])\]|\{([a-z])\}|([a-z])[)/:;\-]?")
_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_INTERVAL = re.compile(_NUMBER + r"\s*(?:,|-|–|—|\bto\b|\band\b)\s*" + _NUMBER)

Segment = tuple[float, float]


def check_problem_type(problem_type: str) -> None:
    """Raise ValueError for a problem type with no reward, naming it and the allowed ones."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {', '.join(PROBLEM_TYPES)}")


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or char.isspace() or unicodedata.category(char).startswith("P")


def _strip_punctuation(text: str) -> str:
    """Drop punctuation (ASCII, or Unicode category P*) and whitespace at both ends."""
    start, end = 0, len(text)
    while start < end and _is_punctuation(text[start]):
        start += 1
    while end > start and _is_punctuation(text[end - 1]):
        end -= 1
    return text[start:end]


def normalize_answer(text: str) -> str:
    """The exact_match normal form.

    NFKC, strip, lower-case; then a lone letter, optionally bracketed `(a)` `[a]` `{a}` or followed
    by one of `) / : ; -`, becomes the letter (`a.` and `a. text` do not); else a whole-string yes/no
    synonym, ignoring surrounding punctuation, becomes "yes"/"no"; else whitespace runs collapse.
    The letter rule comes first, as in the official code: a lone y, t, n or f is a choice letter,
    so answering "no" to a question whose key is F does not score (and "N" does not match "no").
    """
    text = unicodedata.normalize("NFKC", text).strip().lower()
    letter = _LETTER.fullmatch(text)
    if letter:
        return next(group for group in letter.groups() if group)
    word = _strip_punctuation(text)
    if word in YES:
        return "yes"
    if word in NO:
        return "no"
    return " ".join(text.split())


def exact_match_reward(pred: str, gt: Any) -> float:
    """1.0 if normalize_answer(pred) == normalize_answer(gt) and pred is not blank, else 0.0."""
    if not pred.strip():
        return 0.0
    return float(normalize_answer(pred) == normalize_answer(str(gt)))


def _as_latex(answer: str) -> str:
    """A bare answer as an inline LaTeX formula, so `\\sqrt{2}` parses (math-verify needs delimiters)."""
    return "$" + answer.strip().strip("$").strip() + "$"


def math_reward(pred: str, gt: Any, *, timeout_s: Optional[int] = MATH_TIMEOUT_S) -> float:
    """1.0 if math-verify's verify(parse(gt), parse(pred)) holds, both parsed as LaTeX, else 0.0.

    The public code parsed the bare strings: bare LaTeX never parsed, so `\\sqrt{2}` scored 0 even
    when right, and `2\\pi` was read as `2` and matched a wrong `2`. `timeout_s` is math-verify's
    own signal.alarm per call (main thread only); None when the caller enforces a limit itself.
    """
    if not pred.strip():
        return 0.0
    gold = parse(_as_latex(str(gt)), parsing_timeout=timeout_s)
    target = parse(_as_latex(pred), parsing_timeout=timeout_s)
    return float(verify(gold, target, timeout_seconds=timeout_s))


def parse_interval(text: str) -> Optional[Segment]:
    """The first interval in text: `[a, b]`, `(a, b)` or `a SEP b`, SEP in `, - – — to and`; sorted."""
    match = _INTERVAL.search(text)
    if match is None:
        return None
    a, b = float(match.group(1)), float(match.group(2))
    return (a, b) if a <= b else (b, a)


def gt_segments(answer: Any) -> list[Segment]:
    """Ground-truth segments from [s, e] or [[s, e], ...]; ValueError for any other shape."""
    if isinstance(answer, Sequence) and not isinstance(answer, str) and answer:
        if all(isinstance(item, Sequence) and not isinstance(item, str) for item in answer):
            return [_segment(item) for item in answer]
        return [_segment(answer)]
    raise ValueError(f"iou ground truth must be [start, end] or [[start, end], ...], got {answer!r}")


def _segment(pair: Any) -> Segment:
    if len(pair) != 2:
        raise ValueError(f"a ground-truth segment must be [start, end], got {pair!r}")
    try:
        start, end = float(pair[0]), float(pair[1])
    except (TypeError, ValueError):
        raise ValueError(f"a ground-truth segment must hold two numbers, got {pair!r}") from None
    return (start, end) if start <= end else (end, start)


def interval_iou(a: Segment, b: Segment) -> float:
    """1-D IoU = overlap / (|a| + |b| - overlap); 0 when the union is empty."""
    overlap = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - overlap
    return overlap / union if union > 0 else 0.0


def iou_reward(pred: str, gt: Any) -> float:
    """Max IoU of the first interval in pred over the gt segments; 0 for no interval or a point."""
    segments = gt_segments(gt)
    interval = parse_interval(pred)
    if interval is None or interval[0] == interval[1]:
        return 0.0
    return max(interval_iou(interval, segment) for segment in segments)


def _gqa_parts(gt: Any) -> tuple[str, Any]:
    if not isinstance(gt, dict) or "answer" not in gt or "segment" not in gt:
        raise ValueError(f"gqa ground truth must be {{'answer': str, 'segment': [start, end]}}, got {gt!r}")
    return str(gt["answer"]), gt["segment"]


def gqa_reward(pred: str, gt: Any) -> float:
    """exact_match(first part of pred split on "<>", gt answer) + iou(last part, gt segment), in [0, 2]."""
    answer, segment = _gqa_parts(gt)
    parts = pred.split(GQA_SEPARATOR)
    return exact_match_reward(parts[0], answer) + iou_reward(parts[-1], segment)


def check_answer(answer: Answer, problem_type: str) -> None:
    """Raise ValueError when the problem type is unknown or the ground truth does not fit it."""
    check_problem_type(problem_type)
    if problem_type == "iou":
        gt_segments(answer)
    elif problem_type == "gqa":
        gt_segments(_gqa_parts(answer)[1])


def task_reward(
    pred: str, answer: Answer, problem_type: str, *, math_timeout_s: Optional[int] = MATH_TIMEOUT_S
) -> float:
    """R_task(pred) against the ground truth, by problem type (see the module docstring)."""
    check_problem_type(problem_type)
    if problem_type == "exact_match":
        return exact_match_reward(pred, answer)
    if problem_type == "math":
        return math_reward(pred, answer, timeout_s=math_timeout_s)
    if problem_type == "iou":
        return iou_reward(pred, answer)
    return gqa_reward(pred, answer)
