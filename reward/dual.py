"""The dual-answer reward of one response (method.md section 3).

    R = w1 * R_task(a1) + w2 * R_task(a2) + lambda_fmt * R_fmt + alpha * R_fallback

R_task is the problem type's own reward (rl.problems). R_fmt is 1 when the grammar holds; R_fallback is 1 when a1 is the fallback string and
R_task(a2) > fallback_threshold. The maximum is 3.0 (5.0 for gqa, whose task reward is in [0, 2]).
The fallback a1 is no answer, so its R_task is 0 without asking the task (math-verify would spend
~10 ms reading the sentence as a product of symbols, to the same 0).
"""

from __future__ import annotations

from typing import Optional

from rl.grammar import parse_response
from rl.problems import problem
from rl.problems.math_answer import MATH_TIMEOUT_S
from rl.types import Answer, RewardBreakdown


def score(
    response: str,
    answer: Answer,
    problem_type: str,
    *,
    w1: float = 0.9,
    w2: float = 1.1,
    lambda_fmt: float = 1.0,
    alpha: float = 0.3,
    fallback_threshold: float = 0.7,
    math_timeout_s: Optional[int] = MATH_TIMEOUT_S,
) -> RewardBreakdown:
    """Score one response; `a1`/`a2` in the breakdown are task rewards before the weights.

    `math_timeout_s` is math-verify's own alarm per call; RewardScorer passes None because it
    enforces one wall-clock alarm around the whole sample instead.
    """
    task = problem(problem_type)
    task.check(answer)
    parsed = parse_response(response)
    r1 = 0.0 if parsed.is_fallback else task.reward(parsed.a1, answer, math_timeout_s=math_timeout_s)
    if parsed.a2 == parsed.a1:
        r2 = r1
    else:
        r2 = task.reward(parsed.a2, answer, math_timeout_s=math_timeout_s)
    fmt = 1.0 if parsed.format_ok else 0.0
    fallback = 1.0 if parsed.is_fallback and r2 > fallback_threshold else 0.0
    return RewardBreakdown(
        a1=r1,
        a2=r2,
        format=fmt,
        fallback=fallback,
        total=w1 * r1 + w2 * r2 + lambda_fmt * fmt + alpha * fallback,
    )
