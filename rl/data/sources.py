"""The released VideoAuto-R1 folder, as released: `data/data_config.yaml` and one rule per source.

`data_config.yaml` maps each source name to `anno_path` (a JSON array; for TVBench a directory of
JSON files, one per subset) and `data_path` (the media root; DAPO-Math, text only, has none).
Relative paths resolve from the directory the job runs in (the release writes `data/...`), or from
`data.media_root` when set: that plays the role of the folder holding `data/`, for annotation and
media paths alike. Each of the eleven sources names its fields its own way; `SOURCES` holds one
rule per source (docs/data.md lists them). A bad item is skipped and counted in the report; an
unusable annotation file or config entry raises DataError naming it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from rl import prompts
from rl.data.records import (
    LETTERS,
    DataError,
    Dataset,
    PathLike,
    RecordError,
    SkipReport,
    answer_letter,
    strip_option_label,
    validate_sample,
)
from rl.data.video import (
    video_path,
)
from rl.grammar import last_boxed
from rl.types import Sample

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Source:
    """One entry of the release's data_config.yaml, paths resolved."""

    name: str
    anno_path: Path
    data_path: Optional[Path]


@dataclass(frozen=True)
class Item:
    """Where an annotation item comes from: what its rule needs besides the item itself."""

    source: Source
    id: str
    where: str
    subset: str = ""
    """TVBench: the subset (the annotation file's stem)."""


_MEDIA_TOKEN = re.compile(r"<(?:image|video)>\s*", re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_PAREN_LABEL = re.compile(r"^\s*\(([A-Z])\)\s*(.*)$", re.S)
VIDEOR1_TYPES = {"multiple choice": "exact_match", "numerical": "math"}
"""VideoR1's problem types the recipe trains on; every other one (free-form, OCR, regression) is dropped."""
TVBENCH_CLIPPED = ("action_sequence", "action_localization")
"""TVBench subsets whose items are clipped to their `start`/`end` (seconds)."""


def _get(item: dict, key: str, where: str) -> Any:
    if key not in item or item[key] is None:
        raise RecordError(where, key, "missing")
    return item[key]


def _text(item: dict, key: str, where: str) -> str:
    value = _get(item, key, where)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RecordError(where, key, f"expected text, got {type(value).__name__} {value!r}")
    text = str(value).strip()
    if not text:
        raise RecordError(where, key, "is empty")
    return text


def _number_text(value: Any, where: str, key: str) -> str:
    """A time as the annotation writes it (`12`, `3.5`), for question text."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecordError(where, key, f"expected a number, got {value!r}")
    try:
        float(value)
    except ValueError:
        raise RecordError(where, key, f"expected a number, got {value!r}") from None
    return str(value).strip()


def _question(item: dict, key: str, where: str) -> str:
    """The question text with `<image>`/`<video>` placeholders removed (the renderer places the media)."""
    return _MEDIA_TOKEN.sub("", _text(item, key, where)).strip()


def _one_image(item: dict, ctx: Item) -> str:
    """The image of an image item: a name, or a list of exactly one (several images are not trained on)."""
    raw = _get(item, "image", ctx.where)
    if isinstance(raw, list):
        if len(raw) > 1:
            raise RecordError(ctx.where, "image", f"{len(raw)} images; the recipe uses single-image items", "multi_image")
        raw = raw[0] if raw else ""
    if not isinstance(raw, str) or not raw.strip():
        raise RecordError(ctx.where, "image", f"expected an image file name, got {raw!r}")
    return str(_media_root(ctx) / raw.strip())


def _video(item: dict, key: str, ctx: Item, folder: str = "") -> str:
    name = _text(item, key, ctx.where)
    return str(video_path(_media_root(ctx) / folder, name))


def _media_root(ctx: Item) -> Path:
    if ctx.source.data_path is None:
        raise RecordError(ctx.where, "data_path", f"source {ctx.source.name} has media but no data_path")
    return ctx.source.data_path


def _letter(answer: str, options: list[str], ctx: Item, key: str) -> str:
    letter = answer_letter(answer, options)
    if letter is None:
        raise RecordError(ctx.where, key, f"{answer!r} names none of the {len(options)} options", "answer_not_in_options")
    return letter


def _is_math(answer: str) -> bool:
    """math-verify finds a value in the answer (its default parse: LaTeX and plain expressions).

    Not the `$...$`-wrapped parse the reward uses: inside `$...$` any word parses (`yes` is y*e*s).
    """
    from math_verify import parse

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    return bool(parse(answer, parsing_timeout=timeout))


def _sample(ctx: Item, problem_type: str, question: str, answer: Any, *, options: Optional[list[str]] = None,
            media_kind: str = "none", media_path: Optional[str] = None, video_start: Any = None,
            video_end: Any = None) -> Sample:  # fmt: skip
    for name, value in (("start", video_start), ("end", video_end)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RecordError(ctx.where, name, f"expected a number of seconds, got {value!r}")
    sample = Sample(
        id=ctx.id,
        source=ctx.source.name,
        problem_type=problem_type,  # type: ignore[arg-type]
        question=question,
        answer=answer,
        options=options,
        media_kind=media_kind,  # type: ignore[arg-type]
        media_path=media_path,
        video_start=video_start,
        video_end=video_end,
    )
    return validate_sample(sample, ctx.where)


def _dapo_math(item: dict, ctx: Item) -> Sample:
    """`prompt`, `solution`; text only, math."""
    return _sample(ctx, "math", _text(item, "prompt", ctx.where), _text(item, "solution", ctx.where))


_RELEASE_BOX = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
"""The release loader's box (`extract_boxed_content`): content nesting braces one level at most."""


def _release_boxed(raw: str) -> str:
    """What the release loader hands math-verify: the last one-level box's content, else the whole
    answer (so `\\boxed{\\frac{\\sqrt{3}}{2}}`, too deep for it, is parsed box and all, and reads as math)."""
    found = _RELEASE_BOX.findall(raw)
    return found[-1] if found else raw


def _virl(item: dict, ctx: Item) -> Sample:
    """`question` (`<image>` dropped), `image` (one), `answer`: the last box's content; math when
    math-verify reads what the release loader extracts (`_release_boxed`)."""
    raw = _text(item, "answer", ctx.where)
    answer = last_boxed(raw)
    if answer is None or not answer.strip():
        raise RecordError(ctx.where, "answer", f"no \\boxed{{}} answer in {raw!r}", "no_boxed_answer")
    answer = answer.strip()
    problem_type = "math" if _is_math(_release_boxed(raw)) else "exact_match"
    return _sample(ctx, problem_type, _question(item, "question", ctx.where), answer, media_kind="image",
                   media_path=_one_image(item, ctx))  # fmt: skip


def _thinklite(item: dict, ctx: Item) -> Sample:
    """`problem` (`<image>` dropped), `ground_truth`, `image`, `problem_type` (VideoR1's names or ours)."""
    problem_type = _problem_type(item, ctx, {**VIDEOR1_TYPES, "exact_match": "exact_match", "math": "math"})
    return _sample(ctx, problem_type, _question(item, "problem", ctx.where), _text(item, "ground_truth", ctx.where),
                   media_kind="image", media_path=_one_image(item, ctx))  # fmt: skip


def _problem_type(item: dict, ctx: Item, names: dict[str, str]) -> str:
    name = _text(item, "problem_type", ctx.where)
    if name.lower() not in names:
        message = f"{name!r} is not trained on (kept: {', '.join(names)})"
        raise RecordError(ctx.where, "problem_type", message, "unsupported_problem_type")
    return names[name.lower()]


def _videor1(item: dict, ctx: Item) -> Sample:
    """`problem`, `options` (`A. x`), `solution` (`<answer>X</answer>`), `path`, `data_type`, `problem_type`."""
    problem_type = _problem_type(item, ctx, VIDEOR1_TYPES)
    solution = _text(item, "solution", ctx.where)
    tagged = _ANSWER_TAG.findall(solution)
    if not tagged or not tagged[-1].strip():
        raise RecordError(ctx.where, "solution", f"no <answer>...</answer> in {solution!r}", "no_answer_tag")
    answer = tagged[-1].strip()
    problem = _text(item, "problem", ctx.where)
    options = None
    question = problem
    if problem_type == "exact_match":
        labelled = _get(item, "options", ctx.where)
        if not isinstance(labelled, list) or not all(isinstance(o, str) for o in labelled):
            raise RecordError(ctx.where, "options", f"expected a list of 'A. x' strings, got {labelled!r}")
        options = [strip_option_label(o, i) for i, o in enumerate(labelled)]
        question = prompts.videor1_question(problem, labelled)
        answer = _letter(answer, options, ctx, "solution")
    kind = _text(item, "data_type", ctx.where).lower()
    if kind not in ("video", "image"):
        raise RecordError(ctx.where, "data_type", f"expected video or image, got {kind!r}")
    path = _text(item, "path", ctx.where)
    media = video_path(_media_root(ctx), path) if kind == "video" else _media_root(ctx) / path
    return _sample(ctx, problem_type, question, answer, options=options, media_kind=kind, media_path=str(media))


def _tvbench(item: dict, ctx: Item) -> Sample:
    """`question`, `candidates` (texts), `answer` (a candidate's text), `video` under `<data_path>/<subset>/`.

    The subsets in TVBENCH_CLIPPED are clipped to `start`/`end`.
    """
    options = _get(item, "candidates", ctx.where)
    if not isinstance(options, list) or not options:
        raise RecordError(ctx.where, "candidates", f"expected a list of option texts, got {options!r}")
    options = [str(o).strip() for o in options]
    answer = _text(item, "answer", ctx.where)
    if answer not in options:
        raise RecordError(ctx.where, "answer", f"{answer!r} is not one of the candidates", "answer_not_in_options")
    start = end = None
    if ctx.subset in TVBENCH_CLIPPED:
        start, end = _get(item, "start", ctx.where), _get(item, "end", ctx.where)
    question = prompts.choice_question(_text(item, "question", ctx.where), options)
    return _sample(ctx, "exact_match", question, LETTERS[options.index(answer)], options=options, media_kind="video",
                   media_path=_video(item, "video", ctx, ctx.subset), video_start=start, video_end=end)  # fmt: skip


def _stibench(item: dict, ctx: Item) -> Sample:
    """`Question`, `Candidates` ({K: v}, shown `(K) v`), `time_start`/`time_end` (in the text only), `Answer`, `Video`."""
    candidates = _get(item, "Candidates", ctx.where)
    if not isinstance(candidates, dict) or not candidates or not all(k in LETTERS for k in candidates):
        raise RecordError(ctx.where, "Candidates", f"expected {{letter: text}}, got {candidates!r}")
    keys = sorted(candidates)
    question = _text(item, "Question", ctx.where)
    if item.get("time_start") is not None and item.get("time_end") is not None:
        start = _number_text(item["time_start"], ctx.where, "time_start")
        end = _number_text(item["time_end"], ctx.where, "time_end")
        question = f"From {start} s to {end} s. {question}"
    question = prompts.listed_question(question, [f"({k}) {candidates[k]}" for k in keys])
    key = _text(item, "Answer", ctx.where).strip("()")
    if key not in candidates:
        raise RecordError(ctx.where, "Answer", f"{key!r} is not a key of Candidates", "answer_not_in_options")
    return _sample(ctx, "exact_match", question, LETTERS[keys.index(key)], options=[str(candidates[k]) for k in keys],
                   media_kind="video", media_path=_video(item, "Video", ctx))  # fmt: skip


def _mmr(item: dict, ctx: Item) -> Sample:
    """`question`, `options` (`(A) x`, shown after an `Options:` line as `A. x`; empty ones dropped),
    `correctAnswer` (`(C)`), `video`."""
    raw = _get(item, "options", ctx.where)
    if not isinstance(raw, list):
        raise RecordError(ctx.where, "options", f"expected a list of '(A) x' strings, got {raw!r}")
    labels, options = [], []
    for i, option in enumerate(raw):
        match = _PAREN_LABEL.match(str(option))
        label, text = (match.group(1), match.group(2).strip()) if match else (LETTERS[i], str(option).strip())
        if text:
            labels.append(label)
            options.append(text)
    key = _text(item, "correctAnswer", ctx.where).strip("() ")
    if key not in labels:
        raise RecordError(ctx.where, "correctAnswer", f"{key!r} names no non-empty option", "answer_not_in_options")
    # The release's text: `{question}\nOptions:\n` then `X. text` per non-empty option, as written.
    shown = [f"{o[1]}.{o[3:]}" if o[:1] == "(" and o[2:3] == ")" else o for o in map(str, raw) if o != ""]
    question = prompts.listed_question(_text(item, "question", ctx.where) + "\nOptions:", shown)
    return _sample(ctx, "exact_match", question, LETTERS[labels.index(key)], options=options, media_kind="video",
                   media_path=_video(item, "video", ctx))  # fmt: skip


def _grounding(text_key: str, stamp_key: str) -> Callable[[dict, Item], Sample]:
    def rule(item: dict, ctx: Item) -> Sample:
        return _sample(ctx, "iou", _text(item, text_key, ctx.where), _get(item, stamp_key, ctx.where),
                       media_kind="video", media_path=_video(item, "video", ctx))  # fmt: skip

    rule.__doc__ = f"`{text_key}` (the description to ground), `{stamp_key}` ([s, e] seconds), `video`; iou."
    return rule


def _nextgqa(item: dict, ctx: Item) -> Sample:
    """`question`, `options`, `answer` (letter or option text), `timestamps` (the first [s, e] when several), `video`."""
    raw = _get(item, "options", ctx.where)
    if not isinstance(raw, list):
        raise RecordError(ctx.where, "options", f"expected a list of options, got {raw!r}")
    options = [strip_option_label(str(o), i) for i, o in enumerate(raw)]
    letter = _letter(_text(item, "answer", ctx.where), options, ctx, "answer")
    segment = _get(item, "timestamps", ctx.where)
    if isinstance(segment, list) and segment and isinstance(segment[0], list):
        segment = segment[0]
    return _sample(ctx, "gqa", _text(item, "question", ctx.where), {"answer": letter, "segment": segment},
                   options=options, media_kind="video", media_path=_video(item, "video", ctx))  # fmt: skip


Rule = Callable[[dict, Item], Sample]
SOURCES: dict[str, Rule] = {
    "DAPO-Math": _dapo_math,
    "VIRL": _virl,
    "ThinkLite-VL-Hard": _thinklite,
    "VideoR1": _videor1,
    "TVBench": _tvbench,
    "STI-Bench": _stibench,
    "MMR-VBench": _mmr,
    "Charades-STA": _grounding("description", "timestamps"),
    "ActivityNet-TVG": _grounding("description", "timestamps"),
    "TimeR1": _grounding("sentence", "timestamp"),
    "NeXT-GQA": _nextgqa,
}
"""The release's source names (data_config.yaml keys, exactly) and the rule that reads each one's items."""
TEXT_ONLY = ("DAPO-Math",)
"""Sources without a data_path."""


def _resolve(base: Optional[Path], value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: expected a path, got {value!r}")
    path = Path(value.strip())
    return Path(os.path.abspath(path if path.is_absolute() or base is None else base / path))


def read_data_config(path: PathLike, media_root: Optional[PathLike] = None) -> list[Source]:
    """The sources of a release data_config.yaml, checked: known names and keys, annotation files present.

    Relative paths resolve against `media_root`, else the current working directory.
    """
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data config not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read data config {path}: {exc}") from None
    if not isinstance(config, dict) or not config:
        raise DataError(f"{path}: expected a mapping of source names to {{anno_path, data_path}}")
    base = Path(media_root) if media_root is not None else None
    sources = []
    for name, entry in config.items():
        where = f"{path}: source '{name}'"
        if name not in SOURCES:
            raise DataError(f"{where}: unknown source (the release's sources: {', '.join(SOURCES)})")
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected a mapping with anno_path and data_path, got {entry!r}")
        unknown = sorted(set(entry) - {"anno_path", "data_path"})
        if unknown:
            raise DataError(f"{where}: unknown key '{unknown[0]}' (allowed: anno_path, data_path)")
        if "anno_path" not in entry:
            raise DataError(f"{where}: no anno_path")
        anno = _resolve(base, entry["anno_path"], f"{where}: anno_path")
        if name == "TVBench" and not anno.is_dir():
            raise DataError(f"{where}: anno_path must be a directory of per-subset JSON files: {anno}")
        if name != "TVBench" and not anno.is_file():
            raise DataError(f"{where}: annotation file not found: {anno} (remove the source to train without it)")
        if "data_path" not in entry and name not in TEXT_ONLY:
            raise DataError(f"{where}: no data_path (the media root)")
        data = _resolve(base, entry["data_path"], f"{where}: data_path") if "data_path" in entry else None
        sources.append(Source(str(name), anno, data))
    return sources


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None


def _annotation_files(source: Source) -> list[tuple[Path, str]]:
    """(file, subset) pairs: TVBench's directory holds one JSON array per subset; the others one file."""
    if source.name != "TVBench":
        return [(source.anno_path, "")]
    files = sorted(source.anno_path.glob("*.json"))
    if not files:
        raise DataError(f"{source.anno_path}: no JSON files (TVBench's anno_path holds one per subset)")
    return [(f, f.stem) for f in files]


def load_source(source: Source, report: SkipReport) -> list[Sample]:
    """The valid samples of one source; bad items go to `report`."""
    rule = SOURCES[source.name]
    samples = []
    for path, subset in _annotation_files(source):
        items = _read_json(path)
        if not isinstance(items, list):
            raise DataError(f"{path}: expected a JSON array of items, got {type(items).__name__}")
        prefix = f"{source.name}/{subset}/" if subset else f"{source.name}/"
        for index, item in enumerate(items):
            ctx = Item(source, f"{prefix}{index}", f"{path}[{index}]", subset)
            try:
                if not isinstance(item, dict):
                    raise RecordError(ctx.where, "item", f"expected an object, got {type(item).__name__}")
                samples.append(rule(item, ctx))
            except RecordError as exc:
                report.skip(exc.reason, ctx.id, str(exc), source=source.name)
    return samples


def load_release(path: PathLike, media_root: Optional[PathLike] = None) -> Dataset:
    """Every source of a release data_config.yaml (no media check; see `load_dataset`)."""
    report = SkipReport()
    samples: list[Sample] = []
    for source in read_data_config(path, media_root):
        samples.extend(load_source(source, report))
    return Dataset(samples, report)


