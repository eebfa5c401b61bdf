"""Benchmark scoring under two profiles, so eval figures compare with the paper's table.

`paper` (the default) reproduces the VideoAuto-R1 evaluation (its lmms-eval fork: the `*_boxed`
tasks of videomme, mvbench, charades_sta, activitynet_tvg and nextgqa, after the autothink wrapper
chose the text) item for item, defects included. `corrected` fixes each defect. docs/eval.md lists
every difference with an example; tests/test_eval.py checks `paper` against values recorded by
running the official functions (scripts/paper_eval_expected.py).

Which text is scored (`scored_text`): the wrapper answers a1 with the text before the first
`<think>`, otherwise the text after the last `</think>`; lmms-eval strips it. Then per benchmark:

- **Box** (`final_box`): the content of the last `\\boxed{...}` whose content nests braces at most
  one level (`\\boxed{\\boxed{B}}` gives `\\boxed{B}`); when there is none, the whole text.
  corrected: braces to any depth (rl.grammar), and a box that only wraps another box is unwrapped.
- **VideoMME / NExT-GQA letter** (`mc_letter`): remove the answer prefixes (two of the published
  ones are fused by missing commas and never match), then the first capital option letter anywhere
  ("Because" reads B). corrected: the prefixes as meant, and only a standalone letter counts.
- **MVBench** (`mvbench_letter`, its `mcq_acc`): `X. text` gives X; else punctuation is stripped,
  periods not followed by a digit removed (at most 32: the flag passed as the count), the text
  lower-cased and the first standalone letter a-e taken ("it is a cat" reads A). corrected: every
  such period, and a lower-case letter counts only when it is the whole answer.
- **Grounding** (`parse_segment`): the first `a SEP b` interval of plain non-negative numbers
  (SEP: `, - – — to and`, optionally in [] or ()), swapped into order; none gives [0, 0].
  corrected: also `h:mm:ss` / `m:ss` times, a unit after a number (`15s`, `3.5 sec`) and
  `start ... X ... end ... Y`.
- **IoU**: Charades-STA / ActivityNet: max(min(ends) - max(starts), 0) / (max(ends) - min(starts)),
  in that order of float operations; NExT-GQA: intersection / union with a zero-length prediction
  scoring 0, max over the annotated segments. The published Charades formula divides by zero when
  both intervals are the same point; `paper` scores that 0 (the official run would stop).

Aggregates (`headline`) as published: VideoMME and NExT-GQA accuracy = correct / items; MVBench per
task = correct / items whose extracted text is not empty, and the headline weighted by each task's
item count; grounding R@0.3/0.5/0.7 = share with IoU >= m, mIoU the mean. All figures in [0, 1].
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, Literal, Optional, Sequence

from rl.grammar import THINK_CLOSE, THINK_OPEN, last_boxed
from rl.problems.grounding import IOU_THRESHOLDS

Profile = Literal["paper", "corrected"]
PROFILES: tuple[str, ...] = ("paper", "corrected")
Segment = tuple[float, float]
IOP_THRESHOLDS = (0.3, 0.5)

PUBLISHED_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",  # two prefixes fused by a missing comma, as published
    "Best answer:Best option:",  # likewise
)
CORRECTED_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Best answer:",
    "Best option:",
)


def _check(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown eval profile {profile!r}; expected one of {', '.join(PROFILES)}")


def scored_text(text: str, on_a1: bool) -> str:
    """The text the benchmark reads: before the first `<think>` when a1 is the answer, else after
    the last `</think>` (the whole text when the tag is absent), stripped."""
    return (text.split(THINK_OPEN)[0] if on_a1 else text.split(THINK_CLOSE)[-1]).strip()


_BOX_ONE_LEVEL = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
"""A box whose content holds plain text and `{...}` groups without further braces inside."""
_ONLY_BOX = re.compile(r"\s*\\boxed\{(.*)\}\s*", re.DOTALL)


def final_box(text: str, profile: Profile = "paper") -> str:
    """The last box's content, or the whole text when it has none (see the module docstring)."""
    _check(profile)
    if profile == "paper":
        found = _BOX_ONE_LEVEL.findall(text)
        return found[-1] if found else text
    content = last_boxed(text)
    if content is None:
        return text
    while _ONLY_BOX.fullmatch(content) and last_boxed(content) is not None:
        inner = last_boxed(content)
        if f"\\boxed{{{inner}}}" != content.strip():
            break
        content = inner
    return content


boxed_or_text = final_box


def mc_letter(answer: str, letters: str = "ABCD", profile: Profile = "paper") -> str:
    """The option letter VideoMME's / NExT-GQA's extractor reads from an answer ("" for none)."""
    _check(profile)
    text = answer.strip()
    for prefix in PUBLISHED_PREFIXES if profile == "paper" else CORRECTED_PREFIXES:
        text = text.replace(prefix, "")
    if profile == "paper":
        if len(text.split()) > 10 and not re.search(f"[{letters}]", text):
            return ""
        match = re.search(f"[{letters}]", text)
    else:
        match = re.search(rf"(?<![A-Za-z])[{letters}](?![A-Za-z])", text)
    return "" if match is None else match.group(0)


_MVB_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_MVB_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
"""As published: `(?!<=\\d)` is a look-ahead for the text "<=digit" (meant: not after a digit)."""
_MVB_PERIOD_FIXED = re.compile(r"(?<!\d)\.(?!\d)")
_MVB_COMMA = re.compile(r"(\d)(,)(\d)")
_MVB_OPTION = re.compile(r"^([A-E])\.\s*(.+)$", re.IGNORECASE)
_PUBLISHED_PERIOD_COUNT = re.UNICODE.value
"""The published call passes re.UNICODE as sub's `count` argument: at most 32 periods go."""


def mvbench_letter(answer: str, profile: Profile = "paper") -> str:
    """MVBench's `mcq_acc` normal form: an option letter when one is found, else the cleaned text."""
    _check(profile)
    match = _MVB_OPTION.match(answer.strip())
    if match:
        return match.group(1).upper()
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    cleaned = text
    for p in _MVB_PUNCT:
        if p + " " in text or " " + p in text or _MVB_COMMA.search(text):
            cleaned = cleaned.replace(p, "")
        else:
            cleaned = cleaned.replace(p, " ")
    if profile == "paper":
        cleaned = _MVB_PERIOD.sub("", cleaned, count=_PUBLISHED_PERIOD_COUNT)
    else:
        cleaned = _MVB_PERIOD_FIXED.sub("", cleaned)
    cleaned = cleaned.strip("'").strip('"').strip(")").strip("(").strip()
    if profile == "paper":
        cleaned = cleaned.lower()
        letter = re.search(r"\b([a-e])\b", cleaned)
        return letter.group(1).upper() if letter else cleaned
    if re.fullmatch(r"[A-Ea-e]", cleaned):
        return cleaned.upper()
    letter = re.search(r"\b([A-E])\b", cleaned)
    return letter.group(1) if letter else cleaned.lower()


def mvbench_correct(truth_letter: str, answer: str, profile: Profile = "paper") -> bool:
    """`mcq_acc`: both sides through the same normal form, then equal."""
    return mvbench_letter(answer, profile) == mvbench_letter(truth_letter, profile)


_NUM = r"\d+(?:\.\d+)?"
_SEP = r"(?:,|-|–|—|\bto\b|\band\b)"


def _interval_re(num: str) -> re.Pattern:
    return re.compile(
        rf"(?<![\d.])(?:\[\s*(?P<sb>{num})\s*{_SEP}\s*(?P<eb>{num})\s*\]"
        rf"|\(\s*(?P<sp>{num})\s*{_SEP}\s*(?P<ep>{num})\s*\)"
        rf"|(?P<s>{num})\s*{_SEP}\s*(?P<e>{num}))(?![\d.])",
        re.IGNORECASE,
    )


_INTERVAL = _interval_re(_NUM)
_TIME = r"(?:\d+:)?\d+:\d+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNIT = r"(?:\s*(?:seconds|second|secs|sec|s)\b)?"
_INTERVAL_CORRECTED = _interval_re(rf"(?:{_TIME}){_UNIT}")
_LABELLED = re.compile(rf"\bstart\w*\b\D{{0,20}}?(?P<s>{_TIME}){_UNIT}.*?\bend\w*\b\D{{0,20}}?(?P<e>{_TIME})",
                       re.IGNORECASE | re.DOTALL)


def _seconds(token: str) -> float:
    """`h:mm:ss(.f)`, `m:ss(.f)` or a number (a trailing unit dropped), in seconds."""
    token = re.sub(r"[^\d:.]", "", token)
    value = 0.0
    for part in token.split(":"):
        value = value * 60 + float(part)
    return value


def _ordered(a: float, b: float) -> Segment:
    return (a, b) if a <= b else (b, a)


def parse_segment(answer: str, profile: Profile = "paper") -> Optional[Segment]:
    """The predicted [start, end] in an answer (module docstring); None when there is none."""
    _check(profile)
    text = (answer or "").strip()
    if profile == "corrected":
        labelled = _LABELLED.search(text)
        if labelled:
            return _ordered(_seconds(labelled.group("s")), _seconds(labelled.group("e")))
    match = (_INTERVAL if profile == "paper" else _INTERVAL_CORRECTED).search(text)
    if match is None:
        return None
    start = match.group("sb") or match.group("sp") or match.group("s")
    end = match.group("eb") or match.group("ep") or match.group("e")
    return _ordered(_seconds(start), _seconds(end))


def hull_iou(gt: Sequence[float], pred: Sequence[float]) -> float:
    """Charades-STA / ActivityNet's IoU: clipped overlap over the span of both intervals, in the
    published order of operations (so R@0.5 sees the same float); 0 where it would divide by 0."""
    max0, min0 = max(gt[0], pred[0]), min(gt[0], pred[0])
    max1, min1 = max(gt[1], pred[1]), min(gt[1], pred[1])
    if max1 - min0 == 0:
        return 0.0
    return float(max(min1 - max0, 0) / (max1 - min0))


def segment_iou(pred: Sequence[float], gt: Sequence[float], eps: float = 1e-9) -> float:
    """NExT-GQA's IoU: |p ∩ g| / |p ∪ g|, each interval put in order; 0 for a (near) zero-length prediction."""
    gs, ge = _ordered(gt[0], gt[1])
    ps, pe = _ordered(pred[0], pred[1])
    len_p = max(0.0, pe - ps)
    if len_p <= eps:
        return 0.0
    inter = max(0.0, min(ge, pe) - max(gs, ps))
    union = max(0.0, ge - gs) + len_p - inter
    return 0.0 if union <= eps else inter / union


def segment_iop(pred: Sequence[float], gt: Sequence[float]) -> float:
    """|p ∩ g| / |p| (intersection over prediction); 0 for a zero-length prediction."""
    length = pred[1] - pred[0]
    if length <= 0:
        return 0.0
    return max(0.0, min(pred[1], gt[1]) - max(pred[0], gt[0])) / length


def grounding_scores(answer: str, gt_segments: Sequence[Sequence[float]], profile: Profile = "paper",
                     formula: str = "hull") -> dict[str, float]:
    """IoU (and IoP) of the answer's interval, max over the ground-truth segments; [0, 0] when unparsable.

    `formula`: "hull" (Charades-STA / ActivityNet: exact wherever the intervals overlap, 0 otherwise,
    so both profiles keep it) or "union" (NExT-GQA).
    """
    parsed = parse_segment(answer, profile)
    pred = parsed if parsed is not None else (0.0, 0.0)
    gts = [(float(s), float(e)) for s, e in gt_segments]
    if formula == "hull":
        iou = max(hull_iou(g, pred) for g in gts)
    else:
        iou = max(segment_iou(pred, g) for g in gts)
    iop = max(segment_iop(pred, _ordered(*g)) for g in gts)
    return {"iou": iou, "iop": iop, "parsed": float(parsed is not None)}


def option_letters(count: int) -> str:
    return string.ascii_uppercase[:count]


def score(truth: dict[str, Any], response: str, profile: Profile = "paper") -> dict[str, Any]:
    """Score one scored text (`scored_text`) against a benchmark ground truth (rl.data.benchmarks).

    mc / mvbench: `correct` and what was read (`pred`); mvbench also `answered` (the extracted text
    is not empty; unanswered items leave `paper`'s task denominators). grounding: `iou`, `iop`,
    correct when IoU >= 0.5 (R@0.5). gqa: the part before `<>` as a letter A-E, the last part as an
    interval.
    """
    answer = final_box(response, profile)
    kind = truth["kind"]
    if kind == "mc":
        pred = mc_letter(answer, truth["letters"], profile)
        return {"pred": pred, "correct": pred == truth["answer"]}
    if kind == "mvbench":
        pred = mvbench_letter(answer, profile)
        return {"pred": pred, "correct": pred == mvbench_letter(truth["answer"], profile),
                "answered": answer != "" or profile == "corrected"}
    if kind == "grounding":
        scores = grounding_scores(answer, truth["segments"], profile, "hull")
        return {**scores, "correct": scores["iou"] >= 0.5}
    if kind == "gqa":
        parts = answer.split("<>")
        pred = mc_letter(parts[0].strip(), truth["letters"], profile)
        scores = grounding_scores(parts[-1].strip(), truth["segments"], profile, "union")
        return {"pred": pred, "correct": pred == truth["answer"], **scores}
    raise ValueError(f"unknown benchmark scoring kind {kind!r}")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency(rows: Sequence[dict[str, Any]]) -> dict[str, Optional[float]]:
    """Per-sample wall-clock latency (the batched stages a sample went through): p50 and p95, seconds."""
    values = [float(r["latency_s"]) for r in rows if r.get("latency_s") is not None]
    return {"latency_p50_s": _percentile(values, 50), "latency_p95_s": _percentile(values, 95)}


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (correct / items), think ratio, mean generated tokens, tokens per correct answer and
    latency p50/p95; grounding figures (mIoU, R@0.3/0.5/0.7) where rows have an IoU, NExT-GQA's
    (mIoP, IoP@0.3/0.5, Acc@GQA: answer right and IoP >= 0.5) where they have an IoP and a letter."""
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    tokens = sum(r["generated_tokens"] for r in rows)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "think_ratio": _mean([float(r["thought"]) for r in rows]),
        "mean_generated_tokens": tokens / n if n else 0.0,
        "tokens_per_correct": tokens / correct if correct else None,
        **latency(rows),
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


def _task_accuracy(rows: Sequence[dict[str, Any]]) -> float:
    """MVBench per task: correct / answered (items whose extracted text is empty are left out)."""
    answered = [r for r in rows if r.get("answered", True)]
    return sum(bool(r["correct"]) for r in answered) / len(answered) if answered else 0.0


def headline(rows: Sequence[dict[str, Any]], benchmark: str) -> dict[str, Any]:
    """The benchmark's published figures, aggregated as published (module docstring), in [0, 1].

    videomme: accuracy and per duration; mvbench: the size-weighted accuracy and per task; charades_sta
    / activitynet: R@0.3/0.5/0.7 and mIoU; nextgqa: accuracy, R@0.3/0.5/0.7 and mIoU.
    """
    n = len(rows)
    if not n:
        return {}
    if benchmark == "mvbench":
        tasks: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            tasks.setdefault(r["group"], []).append(r)
        per_task = {t: _task_accuracy(v) for t, v in sorted(tasks.items())}
        weighted = sum(per_task[t] * len(v) for t, v in tasks.items()) / n
        return {"accuracy": weighted, "per_task": per_task}
    out: dict[str, Any] = {}
    if benchmark in ("videomme", "nextgqa"):
        out["accuracy"] = sum(bool(r["correct"]) for r in rows) / n
    if benchmark == "videomme":
        durations: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            durations.setdefault(r["group"], []).append(r)
        out["per_duration"] = {d: sum(bool(r["correct"]) for r in v) / len(v) for d, v in sorted(durations.items())}
    if benchmark in ("charades_sta", "activitynet", "nextgqa"):
        ious = [r["iou"] for r in rows]
        for m in IOU_THRESHOLDS:
            out[f"r@{m}"] = sum(1 for v in ious if v >= m) / n
        out["miou"] = sum(ious) / n
    return out
