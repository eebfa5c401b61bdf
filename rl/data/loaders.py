"""Loading samples into the internal schema (`rl.types.Sample`), with one entry point: `load_dataset`.

Three kinds of input, chosen by path:

- the released VideoAuto-R1 folder: a `data_config.yaml` naming, per source, an annotation file
  and a media root (method.md section 6). Sources name their fields differently; each source may
  declare its field mapping and problem type, and eleven known sources have built-in defaults
  (`PRESETS`). Layout:

      media_root: media                 # optional; base of relative media roots (default: yaml's folder)
      problem_type_map: {...}           # optional; extra per-item type names, e.g. {"counting": math}
      sources:                          # or the sources directly at the top level
        Video-R1:
          annotation: video_r1.json     # JSON array (or .jsonl); relative to the yaml's folder
          media_root: video_r1          # relative to the base above
          preset: video-r1              # optional; default: matched from the source name
          media_kind: video             # optional: video | image | none
          problem_type: exact_match     # optional: forces one type for every item
          fields: {question: problem, answer: [solution, answer], options: options}
        Charades-STA: {annotation: charades_sta_train.txt, media_root: Charades_v1, format: charades_sta}
        NExT-GQA: {annotation: val.csv, segments: gsub_val.json, video_map: map_vid_vidorID.json,
                   media_root: NExTVideo, format: nextgqa}

  A JSON annotation may also be an object of videos `{vid: {duration, timestamps, sentences}}`
  (ActivityNet Captions / Charades-STA JSON): each sentence becomes one grounding sample.
- `.jsonl` / `.parquet` in the internal schema (written by `write_jsonl` / `write_parquet`).
- `.json`: one released-style annotation file, as a single source named after the file.

Per-sample problems (a record that does not fit, a missing/empty/corrupt video, a clip window
outside the video) are skipped, warned about and counted in `Dataset.report`; a file that cannot
be used at all (unparseable, missing, a bad data_config) raises DataError naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

import yaml

from rl.config import DataConfig
from rl.data.records import (
    LETTERS,
    Dataset,
    RecordError,
    SkipReport,
    answer_letter,
    render_options,
    sample_from_dict,
    sample_to_dict,
    strip_answer_markup,
    strip_option_label,
    validate_sample,
)
from rl.data.video import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    MediaError,
    VideoDecodeError,
    VideoMeta,
    check_file,
    frame_window,
    probe_image,
    probe_video,
    video_path,
)
from rl.types import PROBLEM_TYPES, Sample

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
MediaCheck = Literal["probe", "exists", "none"]


class DataError(ValueError):
    """A whole input file (or data_config entry) that cannot be used; the message names it."""


FIELD_CANDIDATES: dict[str, tuple[str, ...]] = {
    "id": ("id", "problem_id", "question_id", "qid", "uid"),
    "question": ("problem", "question", "prompt", "query", "sentence", "description"),
    "answer": ("solution", "answer", "ground_truth", "reward_model.ground_truth"),
    "options": ("options", "candidates", "choices"),
    "timestamps": ("timestamps", "timestamp"),
    "media": ("video", "path", "image", "images", "video_path", "image_path"),
    "problem_type": ("problem_type",),
    "media_kind": ("data_type", "media_kind"),
    "video_start": ("video_start",),
    "video_end": ("video_end",),
    "duration": ("duration",),
}
"""Where each internal field is looked for, first present wins; dotted names reach into objects."""

PROBLEM_TYPE_NAMES: dict[str, str] = {
    **{name: name for name in PROBLEM_TYPES},
    "multiple choice": "exact_match",
    "mc": "exact_match",
    "mcq": "exact_match",
    "yes no": "exact_match",
    "ocr": "exact_match",
    "free form": "exact_match",
    "exact match": "exact_match",
    "numerical": "math",
    "numeric": "math",
    "regression": "math",
    "temporal grounding": "iou",
    "grounding": "iou",
    "tvg": "iou",
    "grounded qa": "gqa",
}
"""Per-item problem_type names (Video-R1 style) -> ours; case, '-', '_' and '/' are ignored."""


@dataclass(frozen=True)
class SourcePreset:
    """Built-in defaults of a known source; the yaml may override any of them."""

    media_kind: Optional[str] = None
    """None: per item (data_type field, else the media file's extension)."""
    problem_type: Optional[str] = None
    """Used when an item has no problem_type of its own; None: inferred from the answer."""


PRESETS: dict[str, SourcePreset] = {
    "dapomath": SourcePreset(media_kind="none", problem_type="math"),
    "virl": SourcePreset(media_kind="image"),
    "thinklitevl": SourcePreset(media_kind="image"),
    "videor1": SourcePreset(),
    "tvbench": SourcePreset(media_kind="video", problem_type="exact_match"),
    "stibench": SourcePreset(media_kind="video", problem_type="exact_match"),
    "mmrvbench": SourcePreset(media_kind="video", problem_type="exact_match"),
    "charadessta": SourcePreset(media_kind="video", problem_type="iou"),
    "activitynet": SourcePreset(media_kind="video", problem_type="iou"),
    "timer1": SourcePreset(media_kind="video", problem_type="iou"),
    "nextgqa": SourcePreset(media_kind="video", problem_type="gqa"),
}
"""Keyed by the source name folded to [a-z0-9]; a name matches the longest key it starts with."""

FORMATS = ("json", "jsonl", "charades_sta", "nextgqa")
_ANNOTATION_KEYS = ("annotation", "annotation_path", "json_path", "data_path", "path", "file")
_MEDIA_KEYS = (
    "media_root", "media_dir", "video_root", "video_dir", "video_folder",
    "image_root", "image_dir", "image_folder", "data_root", "root",
)  # fmt: skip
_SOURCE_KEYS = {
    "name", "preset", "format", "media_kind", "problem_type", "fields", "problem_type_map", "segments", "video_map",
}  # fmt: skip
_TOP_KEYS = {"sources", "datasets", "media_root", "problem_type_map"}
_MEDIA_TOKEN = re.compile(r"<(?:image|video)>\s*", re.I)
_LONE_LETTER = re.compile(r"^\(?([A-Z])\)?[.:)]?$")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_SEGMENT_TEXT = re.compile(rf"({_NUMBER})\s*(?:,|-|–|—|to|and)\s*({_NUMBER})")


@dataclass
class SourceSpec:
    """One source of a data_config, resolved: where its files are and how to read its items."""

    name: str
    annotation: Path
    media_root: Path
    format: str = "json"
    media_kind: Optional[str] = None
    problem_type: Optional[str] = None
    """Forced for every item when set (yaml `problem_type`)."""
    default_problem_type: Optional[str] = None
    fields: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(FIELD_CANDIDATES))
    problem_type_names: dict[str, str] = field(default_factory=lambda: dict(PROBLEM_TYPE_NAMES))
    segments: Optional[Path] = None
    video_map: Optional[Path] = None


def preset_for(name: str) -> Optional[SourcePreset]:
    """The built-in defaults whose key the folded source name starts with (longest wins)."""
    folded = re.sub(r"[^a-z0-9]", "", name.lower())
    keys = [k for k in PRESETS if folded.startswith(k)]
    return PRESETS[max(keys, key=len)] if keys else None


def _type_key(name: str) -> str:
    return re.sub(r"[-_/\s]+", " ", name.strip().lower())


# ---------------------------------------------------------------------------------------------
# Released data: data_config.yaml


def load_data_config(path: PathLike, media_root: Optional[PathLike] = None) -> Dataset:
    """Every source of a released-layout data_config.yaml (no media check; see `load_dataset`).

    `media_root` replaces the base that relative per-source media roots resolve against.
    """
    path = Path(path)
    specs = read_data_config(path, media_root)
    samples: list[Sample] = []
    report = SkipReport()
    for spec in specs:
        samples.extend(load_source(spec, report))
    return Dataset(_unique_ids(samples), report)


def read_data_config(path: PathLike, media_root: Optional[PathLike] = None) -> list[SourceSpec]:
    """The sources a data_config.yaml declares, checked: every file it names must exist."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data config not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read data config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a mapping of sources at the top level")
    unknown = sorted(set(config) - _TOP_KEYS) if ("sources" in config or "datasets" in config) else []
    if unknown:
        raise DataError(f"{path}: unknown top-level key '{unknown[0]}' (allowed: {', '.join(sorted(_TOP_KEYS))})")
    here = path.parent
    base = Path(media_root) if media_root is not None else here / str(config.get("media_root", "."))
    extra_types = _type_names(config.get("problem_type_map"), f"{path}: problem_type_map")
    entries = config.get("sources", config.get("datasets"))
    if entries is None:
        entries = {k: v for k, v in config.items() if k not in _TOP_KEYS}
    if isinstance(entries, list):
        named = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise DataError(f"{path}: sources[{i}] must be a mapping, got {entry!r}")
            annotation = next((entry[k] for k in _ANNOTATION_KEYS if k in entry), None)
            name = entry.get("name") or (Path(str(annotation)).stem if annotation else f"source{i}")
            named[str(name)] = entry
        entries = named
    if not isinstance(entries, dict) or not entries:
        raise DataError(f"{path}: no sources declared")
    specs = [_source_spec(str(name), entry, path, here, base, extra_types) for name, entry in entries.items()]
    return specs


def _type_names(mapping: Any, where: str) -> dict[str, str]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise DataError(f"{where}: expected a mapping of names to problem types")
    bad = {k: v for k, v in mapping.items() if v not in PROBLEM_TYPES}
    if bad:
        raise DataError(f"{where}: {bad} maps to an unknown problem type (known: {', '.join(PROBLEM_TYPES)})")
    return {_type_key(str(k)): v for k, v in mapping.items()}


def _source_spec(
    name: str, entry: Any, config_path: Path, here: Path, base: Path, extra_types: dict[str, str]
) -> SourceSpec:
    where = f"{config_path}: source '{name}'"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected a mapping with an annotation file, got {entry!r}")
    unknown = sorted(set(entry) - _SOURCE_KEYS - set(_ANNOTATION_KEYS) - set(_MEDIA_KEYS))
    if unknown:
        raise DataError(f"{where}: unknown key '{unknown[0]}'")
    annotation = next((entry[k] for k in _ANNOTATION_KEYS if k in entry), None)
    if annotation is None:
        raise DataError(f"{where}: no annotation file (key one of {', '.join(_ANNOTATION_KEYS)})")
    annotation = here / str(annotation)
    if not annotation.is_file():
        raise DataError(f"{where}: annotation file not found: {annotation}")
    media = next((entry[k] for k in _MEDIA_KEYS if k in entry), None)
    preset = preset_for(str(entry.get("preset", name)))
    if "preset" in entry and preset is None:
        raise DataError(f"{where}: unknown preset '{entry['preset']}' (known: {', '.join(PRESETS)})")
    preset = preset or SourcePreset()
    suffix = annotation.suffix.lower()
    fmt = entry.get("format") or {".jsonl": "jsonl", ".txt": "charades_sta", ".csv": "nextgqa"}.get(suffix, "json")
    if fmt not in FORMATS:
        raise DataError(f"{where}: unknown format '{fmt}' (known: {', '.join(FORMATS)})")
    media_kind = entry.get("media_kind", preset.media_kind)
    if media_kind not in (None, "video", "image", "none"):
        raise DataError(f"{where}: media_kind must be video, image or none, got {media_kind!r}")
    problem_type = entry.get("problem_type")
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise DataError(f"{where}: problem_type {problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
    fields = dict(FIELD_CANDIDATES)
    for key, names in (entry.get("fields") or {}).items():
        if key not in FIELD_CANDIDATES:
            raise DataError(f"{where}: fields.{key} is not a field (known: {', '.join(FIELD_CANDIDATES)})")
        fields[key] = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
    spec = SourceSpec(
        name=name,
        annotation=annotation,
        media_root=base / str(media) if media is not None else base,
        format=fmt,
        media_kind=media_kind,
        problem_type=problem_type,
        default_problem_type=preset.problem_type,
        fields=fields,
        problem_type_names={**PROBLEM_TYPE_NAMES, **extra_types, **_type_names(entry.get("problem_type_map"), where)},
    )
    for key in ("segments", "video_map"):
        if key in entry:
            extra = here / str(entry[key])
            if not extra.is_file():
                raise DataError(f"{where}: {key} file not found: {extra}")
            setattr(spec, key, extra)
    if fmt == "nextgqa" and spec.segments is None:
        raise DataError(f"{where}: format nextgqa needs a 'segments' file (gsub_*.json)")
    return spec


def load_source(spec: SourceSpec, report: SkipReport) -> list[Sample]:
    """The valid samples of one source; bad items go to `report`."""
    samples = []
    if spec.format in ("json", "jsonl"):
        items, item_spec = _read_json_items(spec)
    elif spec.format == "charades_sta":
        items, item_spec = _read_charades_sta(spec), dataclasses.replace(spec, fields=dict(FIELD_CANDIDATES))
    else:
        items, item_spec = _read_nextgqa(spec), dataclasses.replace(spec, fields=dict(FIELD_CANDIDATES))
    for index, item in enumerate(items):
        where = f"{spec.annotation}[{index}]"
        try:
            if isinstance(item, RecordError):
                raise item
            samples.append(convert_item(item, item_spec, index, where))
        except RecordError as exc:
            report.skip(exc.reason, _raw_id(item, item_spec, index), str(exc))
    return samples


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None


def _read_json_lines(path: Path) -> list[Any]:
    """Objects of a JSONL file; a bad line becomes a RecordError in its place (skipped, counted)."""
    items: list[Any] = []
    failed = 0
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            failed += 1
            items.append(RecordError(f"{path}:{number}", "line", f"not valid JSON: {exc}"))
    if failed and failed == len(items):
        raise DataError(f"{path}: no line is valid JSON")
    return items


def _read_json_items(spec: SourceSpec) -> tuple[list[Any], SourceSpec]:
    if spec.format == "jsonl":
        return _read_json_lines(spec.annotation), spec
    data = _read_json(spec.annotation)
    if isinstance(data, list):
        return data, spec
    if isinstance(data, dict) and data and all(
        isinstance(v, dict) and "sentences" in v and ("timestamps" in v or "timestamp" in v) for v in data.values()
    ):
        return _expand_captions(data), dataclasses.replace(spec, fields=dict(FIELD_CANDIDATES))
    raise DataError(
        f"{spec.annotation}: expected a JSON array of items or an object of videos "
        f"{{id: {{duration, timestamps, sentences}}}}, got {type(data).__name__}"
    )


def _expand_captions(data: dict) -> list[Any]:
    """ActivityNet Captions style {vid: {duration, timestamps, sentences}}: one item per sentence."""
    items: list[Any] = []
    for vid, entry in data.items():
        stamps = entry.get("timestamps", entry.get("timestamp"))
        sentences = entry["sentences"]
        if not isinstance(stamps, list) or not isinstance(sentences, list) or len(stamps) != len(sentences):
            items.append(RecordError(f"video {vid}", "timestamps", "timestamps and sentences differ in length"))
            continue
        for i, (stamp, sentence) in enumerate(zip(stamps, sentences)):
            item = {"id": f"{vid}_{i}", "sentence": sentence, "timestamps": stamp, "video": vid}
            items.append({**item, "duration": entry.get("duration")})
    return items


def _read_charades_sta(spec: SourceSpec) -> list[Any]:
    """Charades-STA `vid start end##sentence` lines."""
    items: list[Any] = []
    for number, line in enumerate(_read_text(spec.annotation).splitlines(), 1):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        parts = head.split()
        try:
            vid, start, end = parts[0], float(parts[1]), float(parts[2])
            if not sep or len(parts) != 3:
                raise ValueError
        except (ValueError, IndexError):
            message = f"expected 'vid start end##sentence', got {line!r}"
            items.append(RecordError(f"{spec.annotation}:{number}", "line", message))
            continue
        items.append({"id": f"{vid}_{number}", "sentence": sentence.strip(), "timestamps": [start, end], "video": vid})
    return items


def _read_nextgqa(spec: SourceSpec) -> list[Any]:
    """NExT-GQA: questions from the csv, segments from gsub_*.json, video files via the optional map."""
    assert spec.segments is not None
    grounding = _read_json(spec.segments)
    video_map = _read_json(spec.video_map) if spec.video_map is not None else {}
    if not isinstance(grounding, dict) or not isinstance(video_map, dict):
        raise DataError(f"{spec.segments}: expected an object of videos")
    try:
        rows = list(csv.DictReader(_read_text(spec.annotation).splitlines()))
    except csv.Error as exc:
        raise DataError(f"{spec.annotation}: not valid CSV: {exc}") from None
    if rows and not {"question", "answer", "qid"} <= set(rows[0]):
        raise DataError(f"{spec.annotation}: expected NExT-GQA columns video_id, question, answer, qid, a0..a4")
    items: list[Any] = []
    for row in rows:
        vid = str(row.get("video_id") or row.get("video") or "")
        options = [row[f"a{i}"] for i in range(26) if row.get(f"a{i}")]
        answer = str(row["answer"]).strip()
        if answer.isdigit() and int(answer) < len(options):
            answer = LETTERS[int(answer)]
        entry = grounding.get(vid) or {}
        location = (entry.get("location") or {}).get(str(row["qid"]))
        items.append(
            {
                "id": f"{vid}_{row['qid']}",
                "question": row["question"],
                "options": options,
                "answer": answer,
                "timestamps": location,
                "video": str(video_map.get(vid, vid)),
                "duration": entry.get("duration"),
            }
        )
    return items


def _lookup(item: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        value: Any = item
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                value = None
                break
            value = value[part]
        if value is not None:
            return value
    return None


def _raw_id(item: Any, spec: SourceSpec, index: int) -> str:
    raw = _lookup(item, spec.fields["id"]) if isinstance(item, dict) else None
    return f"{spec.name}/{raw if raw not in (None, '') else index}"


def _chat_text(messages: list) -> str:
    """A chat-style prompt ([{role, content}], as in DAPO-Math) -> the user's text."""
    parts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role", "user") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if isinstance(content, str):
            parts.append(content)
    return "\n".join(parts)


def _options(raw: Any, where: str) -> Optional[list[str]]:
    if raw is None or raw == [] or raw == {}:
        return None
    if isinstance(raw, dict):
        raw = [raw[k] for k in sorted(raw)]
    if not isinstance(raw, list):
        raise RecordError(where, "options", f"expected a list of options, got {raw!r}")
    return [strip_option_label(str(text), i) for i, text in enumerate(raw)]


def _answer_text(raw: Any, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise RecordError(where, "answer", f"expected a string or number, got {raw!r}")
    return strip_answer_markup(str(raw))


def _segments_from_text(text: str, where: str) -> Any:
    try:
        value = json.loads(text)
        if isinstance(value, list):
            return value
    except json.JSONDecodeError:
        pass
    match = _SEGMENT_TEXT.search(text)
    if not match:
        raise RecordError(where, "answer", f"no [start, end] segment in {text!r}")
    return [float(match.group(1)), float(match.group(2))]


def _infer_problem_type(answer: Any, options: Optional[list[str]], timestamps: Any) -> str:
    """For items with no type anywhere: segments -> iou/gqa, letters and words -> exact_match, else math."""
    text = strip_answer_markup(str(answer)) if isinstance(answer, (str, int, float)) else ""
    letter = bool(_LONE_LETTER.match(text)) or bool(options and answer_letter(text, options))
    if timestamps is not None:
        return "gqa" if letter else "iou"
    if letter or options:
        return "exact_match"
    return "math" if re.search(r"[\d\\]", text) else "exact_match"


def convert_item(item: Any, spec: SourceSpec, index: int, where: str) -> Sample:
    """One released-format item -> a validated Sample, or RecordError naming the field."""
    if not isinstance(item, dict):
        raise RecordError(where, "item", f"expected an object, got {type(item).__name__}")

    def get(key: str) -> Any:
        return _lookup(item, spec.fields[key])

    question = get("question")
    if isinstance(question, list):
        question = _chat_text(question)
    if not isinstance(question, str) or not question.strip():
        raise RecordError(where, "question", f"no question text in fields {', '.join(spec.fields['question'])}")
    question = _MEDIA_TOKEN.sub("", question).strip()
    options = _options(get("options"), where)
    raw_answer, timestamps = get("answer"), get("timestamps")

    problem_type = spec.problem_type
    if problem_type is None and get("problem_type") is not None:
        name = str(get("problem_type"))
        problem_type = spec.problem_type_names.get(_type_key(name))
        if problem_type is None:
            raise RecordError(where, "problem_type", f"unknown problem type {name!r} (add it to problem_type_map)")
    if problem_type is None:
        problem_type = spec.default_problem_type or _infer_problem_type(raw_answer, options, timestamps)

    answer: Any
    if problem_type in ("exact_match", "math"):
        if raw_answer is None:
            raise RecordError(where, "answer", f"no answer in fields {', '.join(spec.fields['answer'])}")
        answer = _answer_text(raw_answer, where)
        if problem_type == "exact_match":
            letter = answer_letter(answer, options) if options else None
            lone = _LONE_LETTER.match(answer)
            answer = letter or (lone.group(1) if lone else answer)
    elif problem_type == "iou":
        if timestamps is not None:
            answer = timestamps
        elif raw_answer is not None:
            answer = _segments_from_text(_answer_text(raw_answer, where), where)
        else:
            raise RecordError(where, "timestamps", "no segment in timestamps or answer fields")
    else:
        if raw_answer is None:
            raise RecordError(where, "answer", f"no answer in fields {', '.join(spec.fields['answer'])}")
        text = _answer_text(raw_answer, where)
        choice, _, segment_text = text.partition("<>")
        choice = choice.strip()
        letter = (answer_letter(choice, options) if options else None) or choice
        if timestamps is None and segment_text:
            timestamps = _segments_from_text(segment_text, where)
        if timestamps is None:
            raise RecordError(where, "timestamps", "grounded QA needs a segment (timestamps field or 'X <> [s, e]')")
        if isinstance(timestamps, list) and timestamps and isinstance(timestamps[0], (list, tuple)):
            timestamps = timestamps[0]
        answer = {"answer": letter, "segment": timestamps}

    media_kind, media_path = _media(item, spec, where, get)
    sample = Sample(
        id=_raw_id(item, spec, index),
        source=spec.name,
        problem_type=problem_type,  # type: ignore[arg-type]
        question=render_options(question, options) if options else question,
        answer=answer,
        options=options,
        media_kind=media_kind,  # type: ignore[arg-type]
        media_path=media_path,
        video_start=_float(get("video_start"), where, "video_start"),
        video_end=_float(get("video_end"), where, "video_end"),
        duration=_float(get("duration"), where, "duration"),
    )
    return validate_sample(sample, where)


def _float(value: Any, where: str, name: str) -> Optional[float]:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RecordError(where, name, f"expected a number, got {value!r}") from None


def _media(item: dict, spec: SourceSpec, where: str, get) -> tuple[str, Optional[str]]:
    raw = get("media")
    if isinstance(raw, list):
        if len(raw) > 1:
            raise RecordError(where, "media", f"{len(raw)} media files; one per sample is supported")
        raw = raw[0] if raw else None
    kind = spec.media_kind
    if kind is None:
        declared = str(get("media_kind") or "").lower()
        suffix = Path(str(raw)).suffix.lower() if raw else ""
        if declared in ("video", "image"):
            kind = declared
        elif raw is None:
            kind = "none"
        elif suffix in IMAGE_EXTENSIONS:
            kind = "image"
        else:
            kind = "video"
    if kind == "none":
        if raw is not None:
            raise RecordError(where, "media", f"source {spec.name} is text-only but the item names {raw!r}")
        return "none", None
    if not isinstance(raw, str) or not raw.strip():
        raise RecordError(where, "media", f"a {kind} sample needs a file in fields {', '.join(spec.fields['media'])}")
    raw = raw.strip().removeprefix("file://")
    path = video_path(spec.media_root, raw) if kind == "video" else spec.media_root / raw
    return kind, str(path)


def _unique_ids(samples: list[Sample]) -> list[Sample]:
    """Sources reuse ids (and some repeat their own): a repeated id gets '#n' appended, counted in the log."""
    seen: dict[str, int] = {}
    renamed = 0
    out = []
    for sample in samples:
        count = seen.get(sample.id, 0)
        seen[sample.id] = count + 1
        if count:
            renamed += 1
            sample = dataclasses.replace(sample, id=f"{sample.id}#{count}")
        out.append(sample)
    if renamed:
        logger.warning("%d samples had an id already taken; renamed with a '#n' suffix", renamed)
    return out


# ---------------------------------------------------------------------------------------------
# Internal schema: JSONL and Parquet


def _resolve_media(sample: Sample, root: Path) -> Sample:
    if sample.media_path is None or os.path.isabs(sample.media_path):
        return sample
    return dataclasses.replace(sample, media_path=str(root / sample.media_path))


def read_jsonl(path: PathLike, media_root: Optional[PathLike] = None) -> Dataset:
    """Internal-schema JSONL; relative media paths resolve against `media_root` (default: the file's folder)."""
    path = Path(path)
    root = Path(media_root) if media_root is not None else path.parent
    report = SkipReport()
    samples: list[Sample] = []
    seen: set[str] = set()
    for index, record in enumerate(_read_json_lines(path)):
        where = f"{path}[{index}]"
        sample_id = str(record.get("id")) if isinstance(record, dict) and record.get("id") else f"{path.name}/{index}"
        try:
            if isinstance(record, RecordError):
                raise record
            sample = sample_from_dict(record, where)
            if sample.id in seen:
                raise RecordError(where, "id", f"duplicate id {sample.id!r}")
        except RecordError as exc:
            report.skip(exc.reason, sample_id, str(exc))
            continue
        seen.add(sample.id)
        samples.append(_resolve_media(sample, root))
    return Dataset(samples, report)


def _portable(sample: Sample, media_root: Optional[PathLike]) -> Sample:
    """Media paths as written: relative to `media_root` when under it, else absolute."""
    if sample.media_path is None:
        return sample
    path = os.path.abspath(sample.media_path)
    if media_root is not None:
        root = os.path.abspath(media_root)
        if os.path.commonpath([path, root]) == root:
            path = os.path.relpath(path, root)
    return dataclasses.replace(sample, media_path=path)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def jsonl_bytes(samples: Iterable[Sample], media_root: Optional[PathLike] = None) -> bytes:
    lines = [json.dumps(sample_to_dict(_portable(s, media_root)), ensure_ascii=False) for s in samples]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def write_jsonl(samples: Iterable[Sample], path: PathLike, *, media_root: Optional[PathLike] = None) -> Path:
    """Internal-schema JSONL, written atomically; media relative to `media_root` when under it."""
    path = Path(path)
    _atomic_write(path, jsonl_bytes(samples, media_root))
    return path


PARQUET_COLUMNS = (
    "id", "source", "problem_type", "question", "answer_json", "options",
    "media_kind", "media_path", "video_start", "video_end", "duration",
)  # fmt: skip
"""The answer is a union (str, segments, {answer, segment}), so Parquet stores it as JSON text."""


def write_parquet(samples: Iterable[Sample], path: PathLike, *, media_root: Optional[PathLike] = None) -> Path:
    """Internal-schema Parquet (answer as JSON in `answer_json`), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("id", pa.string()), ("source", pa.string()), ("problem_type", pa.string()), ("question", pa.string()),
         ("answer_json", pa.string()), ("options", pa.list_(pa.string())), ("media_kind", pa.string()),
         ("media_path", pa.string()), ("video_start", pa.float64()), ("video_end", pa.float64()),
         ("duration", pa.float64())]
    )  # fmt: skip
    rows = []
    for sample in samples:
        record = sample_to_dict(_portable(sample, media_root))
        record["answer_json"] = json.dumps(record.pop("answer"), ensure_ascii=False)
        rows.append(record)
    table = pa.Table.from_pylist(rows, schema=schema)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_parquet(path: PathLike, media_root: Optional[PathLike] = None) -> Dataset:
    """Internal-schema Parquet; relative media paths resolve against `media_root` (default: its folder)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"parquet file not found: {path}") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for non-parquet bytes
        raise DataError(f"cannot read parquet file {path}: {exc}") from None
    missing = [c for c in PARQUET_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing} (the internal schema has {', '.join(PARQUET_COLUMNS)})")
    root = Path(media_root) if media_root is not None else path.parent
    report = SkipReport()
    samples: list[Sample] = []
    seen: set[str] = set()
    for index, row in enumerate(table.select(list(PARQUET_COLUMNS)).to_pylist()):
        where = f"{path}[{index}]"
        try:
            try:
                row["answer"] = json.loads(row.pop("answer_json"))
            except (TypeError, json.JSONDecodeError) as exc:
                raise RecordError(where, "answer", f"answer_json is not JSON: {exc}") from None
            sample = sample_from_dict(row, where)
            if sample.id in seen:
                raise RecordError(where, "id", f"duplicate id {sample.id!r}")
        except RecordError as exc:
            report.skip(exc.reason, str(row.get("id") or index), str(exc))
            continue
        seen.add(sample.id)
        samples.append(_resolve_media(sample, root))
    return Dataset(samples, report)


# ---------------------------------------------------------------------------------------------
# Media checks and the entry point


def check_media(samples: list[Sample], report: SkipReport, mode: MediaCheck = "probe") -> list[Sample]:
    """Samples whose media can be used; the others go to `report` by reason.

    probe: open each video with decord (frame count, fps, first frame; a few ms each, once per
    file), check the clip window holds two frames or more, fill in `duration`; read image headers.
    exists: only that each file is there and not empty. none: no check (decode errors then surface
    as VideoDecodeError when the clip is loaded).
    """
    if mode == "none":
        return samples
    probed: dict[str, Union[VideoMeta, MediaError, None]] = {}
    kept = []
    for sample in samples:
        if sample.media_kind == "none" or sample.media_path is None:
            kept.append(sample)
            continue
        path = sample.media_path
        try:
            if path not in probed:
                try:
                    if mode == "exists":
                        check_file(path, VideoDecodeError if sample.media_kind == "video" else ImageDecodeError)
                        probed[path] = None
                    elif sample.media_kind == "video":
                        probed[path] = probe_video(path)
                    else:
                        probe_image(path)
                        probed[path] = None
                except MediaError as exc:
                    probed[path] = exc
            result = probed[path]
            if isinstance(result, MediaError):
                raise result
            if isinstance(result, VideoMeta):
                try:
                    start, end = frame_window(result.total_frames, result.fps, sample.video_start, sample.video_end)
                except ValueError as exc:
                    raise VideoDecodeError(path, MediaError.BAD_WINDOW, str(exc)) from None
                if end - start + 1 < 2:
                    raise VideoDecodeError(path, MediaError.BAD_WINDOW, "the clip window holds fewer than 2 frames")
                if sample.duration is None:
                    sample = dataclasses.replace(sample, duration=result.duration)
        except MediaError as exc:
            report.skip(exc.reason, sample.id, str(exc))
            continue
        kept.append(sample)
    return kept


def load_dataset(spec: PathLike, media_root: Optional[PathLike] = None, *, check: MediaCheck = "probe") -> Dataset:
    """Samples from a data_config.yaml, an internal .jsonl/.parquet, or one released-style .json.

    `media_root` is where relative media paths resolve (default: the data file's folder; for a
    data_config it replaces the base of the per-source media roots). Bad samples are skipped and
    counted in `.report`; an unusable file raises DataError.
    """
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        dataset = load_data_config(path, media_root)
    elif suffix == ".jsonl":
        dataset = read_jsonl(path, media_root)
    elif suffix == ".parquet":
        dataset = read_parquet(path, media_root)
    elif suffix == ".json":
        if not path.is_file():
            raise DataError(f"annotation file not found: {path}")
        preset = preset_for(path.stem) or SourcePreset()
        source = SourceSpec(
            name=path.stem,
            annotation=path,
            media_root=Path(media_root) if media_root is not None else path.parent,
            media_kind=preset.media_kind,
            default_problem_type=preset.problem_type,
        )
        report = SkipReport()
        dataset = Dataset(_unique_ids(load_source(source, report)), report)
    else:
        raise DataError(f"{path}: expected a data_config .yaml, a .jsonl, a .parquet or a .json file")
    dataset.samples = check_media(dataset.samples, dataset.report, check)
    logger.info("loaded %d samples from %s (%s)", len(dataset), path, dataset.report.summary())
    return dataset


def load_from_config(cfg: DataConfig, *, check: MediaCheck = "probe") -> Dataset:
    """The training samples `data.train` names: a data file, or `synthetic` (generated if needed)."""
    if cfg.train == "synthetic":
        from rl.data.synthetic import generate_synthetic

        generate_synthetic(cfg.synthetic_dir, cfg.synthetic_num_samples, cfg.seed)
        return load_dataset(Path(cfg.synthetic_dir) / "samples.jsonl", check=check)
    return load_dataset(cfg.train, cfg.media_root, check=check)

