"""exact_match: a short answer (often an option letter) compared in a normal form.

R_task = 1 if normalize_answer(pred) == normalize_answer(gt) and pred is not blank, else 0.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any, Optional

from rl.problems.base import ProblemType, answer_text, option_letter
from rl.types import Answer

YES = frozenset({"yes", "y", "true", "t", "ok", "okay"})
NO = frozenset({"no", "n", "false", "f"})
"""Whole-string synonyms; the one-letter ones only apply with punctuation around them (`"y."`), since a
lone letter is a choice letter first."""
_LETTER = re.compile(r"\(([a-z])\)|\[([a-z])\]|\{([a-z])\}|([a-z])[)/:;\-]?")

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


class ExactMatch(ProblemType):
    name = "exact_match"
    letter_answer = True

    def normalize(self, answer: Any, options: Optional[list[str]] = None) -> Answer:
        """A non-empty string; with options, one of their letters."""
        return option_letter(answer_text(answer), options)

    def reward(self, pred: str, answer: Answer, *, math_timeout_s: Optional[int] = None) -> float:
        return exact_match_reward(pred, answer)
