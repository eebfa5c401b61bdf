"""Benchmark scoring as the published numbers are computed, so eval results compare with papers.

The extractors follow lmms-eval's task code (EvolvingLMMs-Lab/lmms-eval, `lmms_eval/tasks/*/utils.py`)
and its `_boxed` variants used for VideoAuto-R1 (`extract_final_boxed_content` first):

- **Final box, else the whole response** (`boxed_or_text`): the published extractor takes the last
  `\\boxed{...}` and, when there is none, falls back to the whole response (its non-strict mode).
  Our box scanner (rl.grammar) matches braces to any depth; for letters and intervals this makes
  no difference.
- **Multiple-choice letter** (`mc_letter`, VideoMME's and NExT-GQA's `extract_characters_regex`):
  remove the answer prefixes ("The best answer is", ...; the published list misses two commas, so
  "The best option isThe correct option is" and "Best answer:Best option:" are single prefixes and
  never match: kept as published); if more than 10 words remain and no option letter appears, no
  answer; else the first upper-case option letter anywhere (A-D for VideoMME, A-E for NExT-GQA).
  "Because ..." therefore reads as B, as it does in the published numbers.
- **MVBench** (`mvbench_letter`, its `mcq_acc`): `X. text` gives X; else punctuation is stripped,
  the text lower-cased and the first standalone letter A-E (either case) is the answer; else the
  processed text itself (which then never equals a letter).
- **Temporal grounding** (`parse_segment`, Charades-STA/ActivityNet/NExT-GQA's
  `parse_timestamps_from_string`): numbers of the box, JSON-ish `start_time`/`end_time`,
  `start: a ... end: b`, `starts at a ... ends at b`, then the first `a SEP b` interval (SEP in
  `, - – — to and`, optionally bracketed). An answer with no interval, or a zero-length one, has
  IoU 0 (the published code scores [0, 0], the same).

Metrics: IoU = |p ∩ g| / |p ∪ g| and IoP = |p ∩ g| / |p| (NExT-GQA's grounding measure), each the
max over the ground-truth segments; R@m = share of samples with IoU >= m for m in 0.3/0.5/0.7.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any, Optional, Sequence

from rl.grammar import last_boxed
from rl.problems.grounding import IOU_THRESHOLDS

Segment = tuple[float, float]
IOP_THRESHOLDS = (0.3, 0.5)

ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is" "The correct option is",  # noqa: ISC001 - as published (missing comma)
    "Best answer:" "Best option:",  # noqa: ISC001 - as published (missing comma)
)


def boxed_or_text(response: str) -> str:
    """The last box's content; the whole response when it has no box (the published non-strict mode)."""
    boxed = last_boxed(response)
    return response if boxed is None else boxed


def mc_letter(answer: str, letters: str = "ABCD") -> str:
    """The option letter VideoMME's / NExT-GQA's extractor reads from an answer ("" for none).

    The published rule "more than 10 words and no letter: no answer" changes nothing (no letter
    is no answer anyway), so it is not repeated here.
    """
    text = answer.strip()
    for prefix in ANSWER_PREFIXES:
        text = text.replace(prefix, "")
    match = re.search(f"[{letters}]", text)
    return "" if match is None else match.group(0)


_MVB_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_MVB_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_MVB_COMMA = re.compile(r"(\d)(,)(\d)")


def mvbench_letter(answer: str) -> str:
    """MVBench's `mcq_acc` normal form: an option letter A-E when one is found, else the cleaned text."""
    match = re.match(r"^([A-E])\.\s*(.+)$", answer.strip(), re.IGNORECASE)
    if match:
        return match.group(1).upper()
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    cleaned = text
    for p in _MVB_PUNCT:
        if p + " " in text or " " + p in text or _MVB_COMMA.search(text):
            cleaned = cleaned.replace(p, "")
        else:
            cleaned = cleaned.replace(p, " ")
    cleaned = _MVB_PERIOD.sub("", cleaned)
    cleaned = cleaned.strip("'").strip('"').strip(")").strip("(").strip().lower()
    letter = re.search(r"\b([A-E])\b", cleaned, re.IGNORECASE)
    return letter.group(1).upper() if letter else cleaned


_NUM = r"-?\d+(?:\.\d+)?"
_UNUM = r"\d+(?:\.\d+)?"
_SEP = r"(?:,|-|–|—|\bto\b|\band\b)"
_INTERVAL = re.compile(
    rf"(?<![\d.])(?:\[\s*(?P<sb>{_UNUM})\s*{_SEP}\s*(?P<eb>{_UNUM})\s*\]"
    rf"|\(\s*(?P<sp>{_UNUM})\s*{_SEP}\s*(?P<ep>{_UNUM})\s*\)"
    rf"|(?P<s>{_UNUM})\s*{_SEP}\s*(?P<e>{_UNUM}))(?![\d.])",
    re.IGNORECASE,
)


def _ordered(a: float, b: float) -> Segment:
    return (a, b) if a <= b else (b, a)


def parse_segment(answer: str) -> Optional[Segment]:
    """The predicted [start, end] in an answer, by the published fallbacks (module docstring); None if none."""
    text = answer.strip()
    if text.startswith("```"):
        parts = text.split("```")
        text = parts[1].strip() if len(parts) >= 3 else text
    boxed = last_boxed(text)
    if boxed is not None:
        numbers = re.findall(_NUM, boxed)
        if len(numbers) >= 2:
            return _ordered(float(numbers[0]), float(numbers[1]))
        text = boxed.strip()
    if text[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        item = data[0] if isinstance(data, list) and data else data
        if isinstance(item, dict):
            for start_key, end_key in (("start_time", "end_time"), ("start", "end"), ("begin", "finish")):
                try:
                    return _ordered(float(item[start_key]), float(item[end_key]))
                except (KeyError, TypeError, ValueError):
                    continue
    for start_re, end_re in (
        (rf'"start_time"\s*:\s*"?({_NUM})"?', rf'"end_time"\s*:\s*"?({_NUM})"?'),
        (rf"start(?:_time)?\s*[:=]?\s*({_NUM})", rf"end(?:_time)?\s*[:=]?\s*({_NUM})"),
        (rf"starts?\s+at\s+({_NUM})", rf"ends?\s+at\s+({_NUM})"),
    ):
        start, end = re.search(start_re, text, re.IGNORECASE), re.search(end_re, text, re.IGNORECASE)
        if start and end:
            return _ordered(float(start.group(1)), float(end.group(1)))
    match = _INTERVAL.search(text)
    if match is None:
        return None
    start_s = match.group("sb") or match.group("sp") or match.group("s")
    end_s = match.group("eb") or match.group("ep") or match.group("e")
    return _ordered(float(start_s), float(end_s))


def segment_iou(pred: Segment, gt: Segment) -> float:
    """|p ∩ g| / |p ∪ g|; 0 for a zero-length prediction."""
    if pred[1] - pred[0] <= 0:
        return 0.0
    inter = max(0.0, min(pred[1], gt[1]) - max(pred[0], gt[0]))
    union = (pred[1] - pred[0]) + (gt[1] - gt[0]) - inter
    return inter / union if union > 0 else 0.0


def segment_iop(pred: Segment, gt: Segment) -> float:
    """|p ∩ g| / |p| (intersection over prediction); 0 for a zero-length prediction."""
    length = pred[1] - pred[0]
    if length <= 0:
        return 0.0
    return max(0.0, min(pred[1], gt[1]) - max(pred[0], gt[0])) / length


def grounding_scores(answer: str, gt_segments: Sequence[Sequence[float]]) -> dict[str, float]:
    """IoU and IoP of the answer's interval, max over the ground-truth segments; 0 when unparsable."""
    pred = parse_segment(answer)
    if pred is None:
        return {"iou": 0.0, "iop": 0.0, "parsed": 0.0}
    gts = [_ordered(float(s), float(e)) for s, e in gt_segments]
    return {"iou": max(segment_iou(pred, g) for g in gts), "iop": max(segment_iop(pred, g) for g in gts), "parsed": 1.0}


def option_letters(count: int) -> str:
    return string.ascii_uppercase[:count]


def score(truth: dict[str, Any], response: str) -> dict[str, Any]:
    """Score one response against a benchmark ground truth (see rl.data.benchmarks for its kinds).

    mc / mvbench: `correct` and the letter read (`pred`). grounding: `iou`, `iop`; correct when
    IoU >= 0.5 (R@0.5). gqa: the answer part (before `<>`) as mc, the last part as grounding.
    """
    answer = boxed_or_text(response)
    kind = truth["kind"]
    if kind == "mc":
        pred = mc_letter(answer, truth["letters"])
        return {"pred": pred, "correct": pred.lower() == truth["answer"].lower()}
    if kind == "mvbench":
        pred = mvbench_letter(answer)
        return {"pred": pred, "correct": pred == mvbench_letter(truth["answer"])}
    if kind == "grounding":
        scores = grounding_scores(answer, truth["segments"])
        return {**scores, "correct": scores["iou"] >= 0.5}
    if kind == "gqa":
        parts = answer.split("<>")
        pred = mc_letter(parts[0].strip(), truth["letters"])
        scores = grounding_scores(parts[-1].strip(), truth["segments"])
        return {"pred": pred, "correct": pred == truth["answer"], **scores}
    raise ValueError(f"unknown benchmark scoring kind {kind!r}")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, think ratio, mean generated tokens and tokens per correct answer; grounding figures
    (mIoU, R@0.3/0.5/0.7) where rows have an IoU, NExT-GQA's (mIoP, IoP@0.3/0.5, Acc@GQA: answer
    right and IoP >= 0.5) where they have an IoP and an answer letter. All in [0, 1] except tokens."""
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    tokens = sum(r["generated_tokens"] for r in rows)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "think_ratio": _mean([float(r["thought"]) for r in rows]),
        "mean_generated_tokens": tokens / n if n else 0.0,
        "tokens_per_correct": tokens / correct if correct else None,
    }
    ious = [r["iou"] for r in rows if "iou" in r]
    if ious:
        out["miou"] = _mean(ious)
        for m in IOU_THRESHOLDS:
            out[f"r@{m}"] = _mean([float(v >= m) for v in ious])
    grounded_qa = [r for r in rows if "iop" in r and "pred" in r]
    if grounded_qa:
        iops = [r["iop"] for r in grounded_qa]
        out["miop"] = _mean(iops)
        for m in IOP_THRESHOLDS:
            out[f"iop@{m}"] = _mean([float(v >= m) for v in iops])
        out["acc@gqa"] = _mean([float(bool(r["correct"]) and r["iop"] >= 0.5) for r in grounded_qa])
    return out
