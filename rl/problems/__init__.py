"""Problem types: everything one kind of question needs, one module each, listed once here.

A problem type (`rl.problems.base.ProblemType`) declares how its ground truth is written
(`normalize`), the user text of its prompt (`user_text`), its task reward R_task (`reward`), how an
evaluation scores a final answer (`score`: reward, correct, iou), and what a well-formed random
answer looks like (`random_answer`, the warm start's format targets). The records, the prompts, the
reward workers and `thinkonce infer` all look the type up here. Adding one touches two files: its
module beside these, and `REGISTRY` below (docs/design.md walks through it).
"""

from __future__ import annotations

from rl.problems.base import ProblemType
from rl.problems.exact_match import ExactMatch
from rl.problems.grounded_qa import GroundedQA
from rl.problems.grounding import Grounding
from rl.problems.math_answer import MathAnswer

REGISTRY: dict[str, ProblemType] = {p.name: p for p in (ExactMatch(), MathAnswer(), Grounding(), GroundedQA())}
PROBLEM_TYPES: tuple[str, ...] = tuple(REGISTRY)


def problem(name: str) -> ProblemType:
    """The problem type called `name`; ValueError naming it and the known ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown problem_type {name!r}; expected one of {', '.join(PROBLEM_TYPES)}") from None
