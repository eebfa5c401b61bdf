"""Checking `Sample` records, reading option labels, and the report of skipped samples.

Every loader funnels its records through `validate_sample`, so a record that reaches training has
an answer of the shape its problem type needs (method.md section 3): a bad record is named (file,
index, field) and skipped at load time rather than scored 0 forever.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Union

from rl.problems import PROBLEM_TYPES, problem
from rl.problems.base import answer_text, number, segment
from rl.prompts import LETTERS
from rl.types import Answer, Sample

logger = logging.getLogger(__name__)

MEDIA_KINDS = ("video", "image", "none")
WARN_LIMIT = 20
"""Skips logged one by one per reason; the rest are only counted."""

_LABEL = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])\s*[.):：]|\[([A-Z])\])\s*")
_BARE_LETTER = re.compile(r"^\s*\(?\[?([A-Z])\]?\)?\s*(?:[.):：]\s*.*)?$", re.S)


PathLike = Union[str, os.PathLike]


class DataError(ValueError):
    """A whole input file (or data_config entry) that cannot be used; the message names it."""


class RecordError(ValueError):
    """One record that does not fit the schema; the message names where it is and which field.

    `reason` is what the skip is counted under: `invalid_<field>` unless a more telling code is given
    (e.g. `multi_image`, `no_answer_tag`, `unsupported_problem_type`).
    """

    def __init__(self, where: str, field_name: str, message: str, reason: Optional[str] = None) -> None:
        super().__init__(f"{where}: field '{field_name}': {message}")
        self.where = where
        self.field = field_name
        self.reason = reason or f"invalid_{field_name}"


def strip_option_label(text: str, index: int) -> str:
    """'B. red' / '(B) red' / 'B) red' -> 'red' when the label is the option's own letter."""
    match = _LABEL.match(text)
    if match and (match.group(1) or match.group(2) or match.group(3)) == LETTERS[index]:
        return text[match.end() :].strip()
    return text.strip()


def answer_letter(answer: str, options: list[str]) -> Optional[str]:
    """The option letter an answer names: 'B', '(B)', 'B. red', or the text of option B."""
    match = _BARE_LETTER.match(answer)
    if match and match.group(1) in LETTERS[: len(options)]:
        return match.group(1)
    folded = answer.strip().casefold()
    hits = [i for i, text in enumerate(options) if text.strip().casefold() == folded]
    return LETTERS[hits[0]] if len(hits) == 1 else None


def _checked(check: Callable[[Any], Any], value: Any, where: str, name: str) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise RecordError(where, name, str(exc)) from None


def _number(value: Any, where: str, name: str) -> float:
    return _checked(number, value, where, name)


def _segment(value: Any, where: str, name: str) -> list[float]:
    return _checked(segment, value, where, name)


def _text(value: Any, where: str, name: str) -> str:
    return _checked(answer_text, value, where, name)


def normalize_answer(problem_type: str, answer: Any, where: str, options: Optional[list[str]] = None) -> Answer:
    """The answer in the shape its problem type needs (`rl.problems`), numbers as floats; raises RecordError."""
    try:
        kind = problem(problem_type)
    except ValueError:
        raise RecordError(where, "problem_type", f"{problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}") from None
    try:
        return kind.normalize(answer, options)
    except ValueError as exc:
        raise RecordError(where, "answer", str(exc)) from None


def validate_sample(sample: Sample, where: str) -> Sample:
    """The sample with a normalised answer, or RecordError naming `where` and the field."""
    if not isinstance(sample.id, str) or not sample.id:
        raise RecordError(where, "id", f"expected a non-empty string, got {sample.id!r}")
    if not isinstance(sample.source, str) or not sample.source:
        raise RecordError(where, "source", f"expected a non-empty string, got {sample.source!r}")
    if sample.problem_type not in PROBLEM_TYPES:
        raise RecordError(where, "problem_type", f"{sample.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
    question = sample.question
    if not isinstance(question, str):
        raise RecordError(where, "question", f"expected a string, got {question!r}")
    if not question.strip():
        raise RecordError(where, "question", "is empty")
    # kept as written: a source's layout may end in a newline the checkpoints were trained with
    options = sample.options
    if options is not None:
        if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
            raise RecordError(where, "options", f"expected a list of 2 to 26 strings, got {options!r}")
        options = [_text(o, where, "options") for o in options]
    answer = normalize_answer(sample.problem_type, sample.answer, where, options)
    if sample.media_kind not in MEDIA_KINDS:
        raise RecordError(where, "media_kind", f"{sample.media_kind!r} is not one of {', '.join(MEDIA_KINDS)}")
    if sample.media_kind == "none":
        if sample.media_path is not None:
            raise RecordError(where, "media_path", f"a text-only sample has a media path {sample.media_path!r}")
    elif not isinstance(sample.media_path, str) or not sample.media_path:
        raise RecordError(where, "media_path", f"a {sample.media_kind} sample needs a path, got {sample.media_path!r}")
    start = end = duration = None
    if sample.video_start is not None or sample.video_end is not None:
        if sample.media_kind != "video":
            raise RecordError(where, "video_start", "a clip window is only meaningful for a video")
        if sample.video_start is not None:
            start = _number(sample.video_start, where, "video_start")
            if start < 0:
                raise RecordError(where, "video_start", f"must be >= 0, got {start}")
        if sample.video_end is not None:
            end = _number(sample.video_end, where, "video_end")
            if end <= 0:
                raise RecordError(where, "video_end", f"must be > 0, got {end}")
        if start is not None and end is not None and not start < end:
            raise RecordError(where, "video_end", f"video_start {start} must be < video_end {end}")
    if sample.duration is not None:
        duration = _number(sample.duration, where, "duration")
        if duration <= 0:
            raise RecordError(where, "duration", f"must be > 0, got {duration}")
    return dataclasses.replace(
        sample,
        question=question,
        options=options,
        answer=answer,
        video_start=start,
        video_end=end,
        duration=duration,
    )


SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(Sample))


def sample_to_dict(sample: Sample) -> dict[str, Any]:
    return dataclasses.asdict(sample)


def sample_from_dict(record: Any, where: str) -> Sample:
    """A record of the internal schema (the fields of `Sample`, no others), validated."""
    if not isinstance(record, dict):
        raise RecordError(where, "record", f"expected an object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(SAMPLE_FIELDS))
    if unknown:
        raise RecordError(where, unknown[0], f"unknown field (the schema has {', '.join(SAMPLE_FIELDS)})")
    for name in ("id", "source", "problem_type", "question", "answer"):
        if name not in record:
            raise RecordError(where, name, "missing")
    return validate_sample(Sample(**record), where)


@dataclass
class SkipReport:
    """Samples left out and why: counts and ids by reason, counts by source. A run never stops on one bad sample."""

    counts: Counter = field(default_factory=Counter)
    ids: dict[str, list[str]] = field(default_factory=dict)
    by_source: dict[str, Counter] = field(default_factory=dict)

    def skip(self, reason: str, sample_id: str, message: str, source: str = "") -> None:
        """Count a skipped sample and warn (the first WARN_LIMIT of each reason)."""
        self.counts[reason] += 1
        self.ids.setdefault(reason, []).append(sample_id)
        self.by_source.setdefault(source or "?", Counter())[reason] += 1
        if self.counts[reason] <= WARN_LIMIT:
            logger.warning("skipping %s (%s): %s", sample_id, reason, message)
        elif self.counts[reason] == WARN_LIMIT + 1:
            logger.warning("more samples skipped for %s: only counted from here on", reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "SkipReport") -> None:
        self.counts.update(other.counts)
        for reason, ids in other.ids.items():
            self.ids.setdefault(reason, []).extend(ids)
        for source, counts in other.by_source.items():
            self.by_source.setdefault(source, Counter()).update(counts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.total,
            "counts": dict(self.counts),
            "by_source": {k: dict(v) for k, v in self.by_source.items()},
            "ids": {k: list(v) for k, v in self.ids.items()},
        }

    def summary(self) -> str:
        if not self.total:
            return "no samples skipped"
        return f"{self.total} samples skipped: " + ", ".join(f"{k} {v}" for k, v in self.counts.most_common())


@dataclass
class Dataset:
    """Loaded samples plus the report of those left out."""

    samples: list[Sample]
    report: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def counts_by(self, attribute: str) -> dict[str, int]:
        """e.g. counts_by("source"), counts_by("problem_type"), counts_by("media_kind")."""
        return dict(Counter(getattr(s, attribute) for s in self.samples))

    def summary(self) -> str:
        """One line per source: samples kept, by modality, and skipped by reason; then the totals."""
        kept = Counter(s.source for s in self.samples)
        kinds: dict[str, Counter] = {}
        for s in self.samples:
            kinds.setdefault(s.source, Counter())[s.media_kind] += 1
        lines = []
        for source in list(dict.fromkeys([*kept, *self.report.by_source])):
            skipped = self.report.by_source.get(source, Counter())
            media = ", ".join(f"{k} {v}" for k, v in sorted(kinds.get(source, Counter()).items()))
            reasons = ", ".join(f"{k} {v}" for k, v in skipped.most_common()) or "none"
            lines.append(f"  {source}: {kept[source]} kept ({media or 'none'}); skipped {sum(skipped.values())}: {reasons}")
        lines.append(f"  total: {len(self.samples)} kept; {self.report.summary()}")
        return "\n".join(lines)
