"""iou: temporal grounding, the video segment a description refers to.

R_task = |pred ∩ gt| / |pred ∪ gt| of the first interval in pred, max over the gt segments.
Evaluated as mIoU and R@0.3/0.5/0.7 (correct = IoU > 0.5).
"""

from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import numpy as np

from rl.problems.base import ProblemType, segment
from rl.prompts import Prompts, fill
from rl.types import Answer, Sample

IOU_THRESHOLDS = (0.3, 0.5, 0.7)
"""The R@m thresholds every grounding figure reports."""
_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_INTERVAL = re.compile(_NUMBER + r"\s*(?:,|-|–|—|\bto\b|\band\b)\s*" + _NUMBER)

Segment = tuple[float, float]


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


def random_interval(sample: Sample, rng: np.random.Generator) -> str:
    """`[s, e]` inside the sample's duration (5 s when unknown), one decimal place."""
    duration = sample.duration or 5.0
    s = round(float(rng.uniform(0, duration * 0.6)), 1)
    e = round(min(duration, s + float(rng.uniform(0.5, duration * 0.5))), 1)
    return f"[{s:.1f}, {e:.1f}]"


class Grounding(ProblemType):
    name = "iou"

    def normalize(self, answer: Any, options: Optional[list[str]] = None) -> Answer:
        """[s, e] or [[s, e], ...] in seconds (a list of one segment becomes the segment)."""
        if isinstance(answer, (list, tuple)) and answer and all(isinstance(v, (list, tuple)) for v in answer):
            segments = [segment(v) for v in answer]
            return segments[0] if len(segments) == 1 else segments
        return segment(answer)

    def reward(self, pred: str, answer: Answer, *, math_timeout_s: Optional[int] = None) -> float:
        return iou_reward(pred, answer)

    def user_text(self, sample: Sample, prompts: Prompts) -> str:
        return fill(prompts.grounding, description=sample.question)

    def score(self, pred: str, answer: Answer) -> dict[str, Any]:
        iou = iou_reward(pred, answer)
        return {"reward": iou, "correct": iou > 0.5, "iou": iou}

    def random_answer(self, sample: Sample, rng: np.random.Generator) -> str:
        return random_interval(sample, rng)
