"""math: a mathematical answer, checked for equivalence by math-verify.

R_task = 1 if math-verify finds verify(parse(gt), parse(pred)), both parsed as LaTeX, else 0.
"""

from __future__ import annotations

from typing import Any, Optional

from math_verify import parse, verify

from rl.problems.base import ProblemType
from rl.types import Answer

MATH_TIMEOUT_S = 5
"""math-verify's own per-call alarm (seconds) when the caller does not enforce one."""


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


class MathAnswer(ProblemType):
    name = "math"

    def reward(self, pred: str, answer: Answer, *, math_timeout_s: Optional[int] = MATH_TIMEOUT_S) -> float:
        return math_reward(pred, answer, timeout_s=math_timeout_s)
