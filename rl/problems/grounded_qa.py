"""gqa: grounded question answering (NExT-GQA), an option letter and the segment that supports it.

Answers are written `letter <> [start, end]`. R_task = exact_match(first part of pred split on
"<>", gt answer) + iou(last part, gt segment), in [0, 2]; evaluated as answer accuracy and mIoU.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from rl.problems.base import ProblemType, answer_text, option_letter, segment
from rl.problems.exact_match import exact_match_reward
from rl.problems.grounding import iou_reward, random_interval
from rl.prompts import LETTERS, Prompts, fill, option_lines
from rl.types import Answer, Sample

GQA_SEPARATOR = "<>"


def _gqa_parts(gt: Any) -> tuple[str, Any]:
    if not isinstance(gt, dict) or "answer" not in gt or "segment" not in gt:
        raise ValueError(f"gqa ground truth must be {{'answer': str, 'segment': [start, end]}}, got {gt!r}")
    return str(gt["answer"]), gt["segment"]


def gqa_reward(pred: str, gt: Any) -> float:
    """exact_match(first part of pred split on "<>", gt answer) + iou(last part, gt segment), in [0, 2]."""
    answer, segment = _gqa_parts(gt)
    parts = pred.split(GQA_SEPARATOR)
    return exact_match_reward(parts[0], answer) + iou_reward(parts[-1], segment)


class GroundedQA(ProblemType):
    name = "gqa"
    letter_answer = True

    def normalize(self, answer: Any, options: Optional[list[str]] = None) -> Answer:
        """{"answer": option letter, "segment": [s, e]}."""
        if not isinstance(answer, dict) or set(answer) != {"answer", "segment"}:
            raise ValueError(f'expected {{"answer": str, "segment": [s, e]}}, got {answer!r}')
        return {"answer": option_letter(answer_text(answer["answer"]), options), "segment": segment(answer["segment"])}

    def reward(self, pred: str, answer: Answer, *, math_timeout_s: Optional[int] = None) -> float:
        return gqa_reward(pred, answer)

    def user_text(self, sample: Sample, prompts: Prompts) -> str:
        return fill(prompts.grounded_qa, question=sample.question, options="\n".join(option_lines(sample.options or [])))

    def score(self, pred: str, answer: Answer) -> dict[str, Any]:
        """Correct when the letter matches; the segment is reported as iou."""
        letter, segment_ = _gqa_parts(answer)
        parts = pred.split(GQA_SEPARATOR)
        accuracy = exact_match_reward(parts[0], letter)
        iou = iou_reward(parts[-1], segment_)
        return {"reward": accuracy + iou, "correct": accuracy > 0.5, "iou": iou}

    def random_answer(self, sample: Sample, rng: np.random.Generator) -> str:
        interval = random_interval(sample, rng)  # drawn first: the warm start's random stream depends on the order
        return f"{LETTERS[int(rng.integers(len(sample.options or 'AB')))]} <> {interval}"
