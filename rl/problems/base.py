"""What every problem type declares, and the answer-shape checks they share."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from rl.prompts import LETTERS, Prompts
from rl.types import Answer, Sample


class ProblemType:
    """One kind of question: its ground truth, user text, reward, evaluation score and example answers.

    Subclasses set `name` and override what differs from the defaults below (a free-text question
    with the answer suffix, scored correct when its reward is above 0.5). Every method is pure, so
    the reward workers, the data loaders and the evaluation all call the same code.
    """

    name: str = ""
    letter_answer: bool = False
    """With options, a1 is an option letter (the warm start spreads it evenly over the letters)."""

    def normalize(self, answer: Any, options: Optional[list[str]] = None) -> Answer:
        """The ground truth in the shape `reward` reads; ValueError naming what is wrong."""
        return answer_text(answer)

    def check(self, answer: Any) -> None:
        """ValueError, naming the type, when `answer` is no ground truth of this type (a data error)."""
        try:
            self.normalize(answer)
        except ValueError as exc:
            raise ValueError(f"{self.name} ground truth {answer!r}: {exc}") from None

    def reward(self, pred: str, answer: Answer, *, math_timeout_s: Optional[int] = None) -> float:
        """R_task(pred) against the ground truth (method.md section 3)."""
        raise NotImplementedError

    def user_text(self, sample: Sample, prompts: Prompts) -> str:
        """The text of the user turn (the visual item comes before it)."""
        return sample.question + prompts.answer_suffix

    def score(self, pred: str, answer: Answer) -> dict[str, Any]:
        """An evaluation's view of one final answer: reward, correct, and iou where the type has one."""
        reward = self.reward(pred, answer)
        return {"reward": reward, "correct": reward > 0.5}

    def random_answer(self, sample: Sample, rng: np.random.Generator) -> str:
        """A well-formed answer drawn at random, not the ground truth (the warm start's format targets)."""
        if sample.options:
            return LETTERS[int(rng.integers(len(sample.options)))]
        return str(int(rng.integers(0, 6)))


def answer_text(value: Any) -> str:
    """A non-empty answer string (numbers are accepted and written as strings)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    text = str(value).strip()
    if not text:
        raise ValueError("is empty")
    return text


def option_letter(text: str, options: Optional[list[str]]) -> str:
    """`text` itself when it is one of the option letters (or there are no options)."""
    if options and text not in LETTERS[: len(options)]:
        raise ValueError(f"{text!r} is not an option letter of {len(options)} options")
    return text


def number(value: Any) -> float:
    """A finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def segment(value: Any) -> list[float]:
    """[start, end] in seconds with 0 <= start < end."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"expected [start, end] in seconds, got {value!r}")
    start, end = (number(v) for v in value)
    if not 0 <= start < end:
        raise ValueError(f"expected 0 <= start < end, got {list(value)!r}")
    return [start, end]
