"""Evaluation benchmarks from local annotation files, in the formats lmms-eval's tasks read.

Each benchmark becomes `Sample`s (the prompt side: the official task's user text, which the
renderer completes with its post prompt) plus, per sample id, the ground truth its published scorer needs
(`reward.benchmarks.score`) and a group for per-group figures. Nothing is downloaded: give the
annotation file (the HF dataset's parquet/json/jsonl) and, optionally, the folder of the videos.

| benchmark | annotation columns (lmms-eval) | problem | group | videos looked for under media_root |
|---|---|---|---|---|
| videomme | videoID, question_id, duration, domain, sub_category, task_type, question, options ["A. ...", ...], answer (letter) | mc A-D | duration | `{videoID}.mp4` (.MP4, .mkv), also in `data/` |
| mvbench | video, question, candidates, answer (text); one file per task (`json/<task>.json`); the whole video (the official task ignores `start`/`end`) | mvbench | task | `<task folder>/video` (lmms-eval's DATA_LIST), also under `video/` |
| charades_sta | video, caption, timestamp [s, e] | grounding | - | `video`, also in `Charades_v1_480/` |
| activitynet | video, caption, timestamp [s, e] | grounding | - | `video`, also in `val2_videos/` |
| nextgqa | video, qid, question, candidates, answer (text), solution [[s, e], ...] | gqa (A-E) | - | `video`, also in `nextgqa_videos/` |
| internal | our JSONL/Parquet schema or a data_config.yaml (rl.data.loaders) | by problem_type | problem_type | as the loader resolves |

Charades-STA and ActivityNet-TVG share their columns; `detect` tells them apart by the official
video folder beside the file (`Charades_v1_480/`, `val2_videos/`) and otherwise asks for
`--benchmark`. MVBench tasks stored as frame folders (episodic_reasoning's TVQA frames) are not videos and are
skipped by the media check, counted in the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from rl.data.files import read_json_lines
from rl.data.loaders import load_dataset
from rl.data.media import check_media
from rl.data.records import (
    LETTERS,
    Dataset,
    RecordError,
    SkipReport,
    strip_option_label,
    validate_sample,
)
from rl.types import Sample

PathLike = Union[str, os.PathLike]
BENCHMARKS = ("videomme", "mvbench", "charades_sta", "activitynet", "nextgqa", "internal")

MVBENCH_FOLDERS = {
    "object_interaction": "star/Charades_segment",
    "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment",
    "action_localization": "sta/sta_video_segment",
    "moving_count": "clevrer/video_validation",
    "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos",
    "object_shuffle": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "moving_direction": "clevrer/video_validation",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "scene_transition": "scene_qa/video",
    "state_change": "perception/videos",
    "moving_attribute": "clevrer/video_validation",
    "action_antonym": "ssv2_video_mp4",
    "unexpected_action": "FunQA_test/test",
    "counterfactual_inference": "clevrer/video_validation",
    "object_existence": "clevrer/video_validation",
    "action_count": "perception/videos",
}
"""MVBench task -> its video folder (lmms-eval's `DATA_LIST`)."""


GROUNDING_FOLDERS = {"charades_sta": "Charades_v1_480", "activitynet": "val2_videos"}
"""The video folder each official grounding task reads (`temporal_grounding_doc_to_visual`)."""


class BenchmarkError(ValueError):
    """An annotation file (or folder) that cannot be read as the benchmark; the message names it."""


@dataclass
class Benchmark:
    """Usable samples (after the media check), why the others were left out, and the ground truths."""

    name: str
    dataset: Dataset
    truths: dict[str, dict[str, Any]] = field(default_factory=dict)
    """sample id -> {"kind": mc | mvbench | grounding | gqa, "answer", "letters", "segments", "group"};
    empty for `internal` (scored by problem type)."""

    def __len__(self) -> int:
        return len(self.dataset)


def read_rows(path: PathLike) -> list[dict[str, Any]]:
    """The records of a .parquet, .json (an array, or an object with one array) or .jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"annotation file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        elif suffix == ".jsonl":
            rows = read_json_lines(path)  # a bad line is a BadLine, skipped and counted by _convert_rows
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                arrays = [v for v in data.values() if isinstance(v, list)]
                data = arrays[0] if len(arrays) == 1 else data
            rows = data
        else:
            raise BenchmarkError(f"{path}: expected a .parquet, .json or .jsonl annotation file")
    except BenchmarkError:
        raise
    except Exception as exc:  # json, pyarrow and decoding errors come in many types
        raise BenchmarkError(f"cannot read annotation file {path}: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, (dict, RecordError)) for r in rows):
        raise BenchmarkError(f"{path}: expected a list of records")
    return rows


def _grounding_layout(path: Path, media_root: Optional[PathLike]) -> str:
    """Charades-STA and ActivityNet-TVG share their columns: tell them apart by the official video
    folder beside the annotation (or under `media_root`), never by the file name."""
    roots = [Path(media_root)] if media_root is not None else [path.parent]
    found = {name for root in roots for name, folder in GROUNDING_FOLDERS.items() if (root / folder).is_dir()}
    if len(found) == 1:
        return found.pop()
    folders = " or ".join(f"{f}/ ({n})" for n, f in GROUNDING_FOLDERS.items())
    raise BenchmarkError(f"{path}: Charades-STA and ActivityNet-TVG files have the same columns and no {folders} "
                         "folder tells them apart here; pass --benchmark charades_sta or --benchmark activitynet")


def detect(path: PathLike, media_root: Optional[PathLike] = None) -> str:
    """The benchmark an annotation file (or MVBench folder) holds, from its columns (and, for the two
    grounding sets, the official video folder)."""
    path = Path(path)
    if path.is_dir():
        return "mvbench"
    if path.suffix.lower() in (".yaml", ".yml"):
        return "internal"
    rows = read_rows(path)
    columns = next((set(r) for r in rows if isinstance(r, dict)), set())
    if {"videoID", "options", "answer"} <= columns:
        return "videomme"
    if {"candidates", "solution"} <= columns:
        return "nextgqa"
    if {"candidates", "answer", "video"} <= columns:
        return "mvbench"
    if {"caption", "timestamp", "video"} <= columns:
        return _grounding_layout(path, media_root)
    if {"problem_type", "answer", "question"} <= columns:
        return "internal"
    raise BenchmarkError(f"{path}: cannot tell the benchmark from its columns {sorted(columns)}; pass --benchmark")


def _media(root: Path, name: str, folders: tuple[str, ...], suffixes: tuple[str, ...] = ()) -> str:
    """The first existing of root/folder/name (and name with other suffixes); else the first candidate."""
    names = [name] + [str(Path(name).with_suffix(s)) for s in suffixes]
    candidates = [root / folder / n for folder in folders for n in names]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return str(candidates[0])


def _letter_of(answer: Any, options: list[str], where: str) -> str:
    """The option letter of a text answer (its position among the options, as published)."""
    if answer in options:
        return LETTERS[options.index(answer)]
    raise RecordError(where, "answer", f"{answer!r} is not one of the candidates {options!r}")


def _segments(value: Any, where: str) -> list[list[float]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RecordError(where, "timestamp", f"not a [start, end] list: {value!r}") from None
    if isinstance(value, (list, tuple)) and len(value) == 2 and not isinstance(value[0], (list, tuple)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise RecordError(where, "timestamp", f"expected [start, end] or [[start, end], ...], got {value!r}")
    try:
        return [[float(s), float(e)] for s, e in value]
    except (TypeError, ValueError):
        raise RecordError(where, "timestamp", f"expected numbers, got {value!r}") from None


VIDEOMME_INSTRUCTION = ("Select the best answer to the following multiple-choice question based on the video. "
                        "Respond with only the letter (A, B, C, or D) of the correct option.")
"""The first line of VideoMME's official user text (`videomme_doc_to_text`)."""


def _videomme_question(question: str, labelled: list[str]) -> str:
    """VideoMME's official user text up to its post prompt (the renderer appends `\nPut your final
    answer in \\boxed{}.`, the `_boxed` task's post prompt): instruction, question, options as written."""
    return VIDEOMME_INSTRUCTION + "\n" + question + "\n" + "\n".join(labelled)


def _mvbench_question(question: str, options: list[str]) -> str:
    """MVBench's official user text up to its post prompt: `Question: q\nOptions:\n(A) x\n...`."""
    lines = "".join(f"({LETTERS[i]}) {o}\n" for i, o in enumerate(options))
    return ("Question: " + question + "\nOptions:\n" + lines).rstrip("\n")


def _videomme(row: dict, index: int, root: Path, where: str) -> tuple[Sample, dict]:
    options = [strip_option_label(str(o), i) for i, o in enumerate(row["options"])]
    answer = str(row["answer"]).strip()
    sample = Sample(id=str(row.get("question_id") or index), source="videomme", problem_type="exact_match",
                    question=_videomme_question(str(row["question"]), [str(o) for o in row["options"]]),
                    answer=answer, options=options,
                    media_kind="video", media_path=_media(root, f"{row['videoID']}.mp4", ("", "data"), (".MP4", ".mkv")))
    return sample, {"kind": "mc", "answer": answer, "letters": "ABCD", "group": str(row.get("duration", ""))}


def _mvbench(task: str) -> Callable[[dict, int, Path, str], tuple[Sample, dict]]:
    folder = MVBENCH_FOLDERS.get(task, task)

    def convert(row: dict, index: int, root: Path, where: str) -> tuple[Sample, dict]:
        options = [str(c) for c in row["candidates"]]
        letter = _letter_of(row["answer"], options, where)
        # The whole video, as the official task reads it (its `start`/`end` columns are not used there).
        sample = Sample(id=f"{task}/{index}", source=f"mvbench/{task}", problem_type="exact_match",
                        question=_mvbench_question(str(row["question"]), options), answer=letter, options=options,
                        media_kind="video", media_path=_media(root, str(row["video"]), (folder, f"video/{folder}")))
        return sample, {"kind": "mvbench", "answer": letter, "group": task}

    return convert


def _grounding(name: str, folder: str) -> Callable[[dict, int, Path, str], tuple[Sample, dict]]:
    def convert(row: dict, index: int, root: Path, where: str) -> tuple[Sample, dict]:
        segments = _segments(row["timestamp"], where)
        sample = Sample(id=str(row.get("id") or f"{name}/{index}"), source=name, problem_type="iou",
                        question=str(row["caption"]), answer=segments[0], media_kind="video",
                        media_path=_media(root, str(row["video"]), ("", folder)))
        return sample, {"kind": "grounding", "segments": segments, "group": ""}

    return convert


def _nextgqa(row: dict, index: int, root: Path, where: str) -> tuple[Sample, dict]:
    options = [str(c) for c in row["candidates"]]
    letter = _letter_of(row["answer"], options, where)
    segments = _segments(row["solution"], where)
    qid = row.get("qid")
    sample = Sample(id=f"{row['video']}/{qid}" if qid is not None else f"nextgqa/{index}", source="nextgqa",
                    problem_type="gqa", question=str(row["question"]).strip(),  # the grounded-QA template lists the options
                    answer={"answer": letter, "segment": segments[0]}, options=options, media_kind="video",
                    media_path=_media(root, str(row["video"]), ("", "nextgqa_videos"), (".mp4",)))
    return sample, {"kind": "gqa", "answer": letter, "letters": "ABCDE", "segments": segments, "group": ""}


def _convert_rows(rows: list[dict], convert: Callable, root: Path, where: str, report: SkipReport,
                  samples: list[Sample], truths: dict[str, dict]) -> None:
    for index, row in enumerate(rows):
        at = f"{where}[{index}]"
        try:
            if isinstance(row, RecordError):
                raise row
            try:
                sample, truth = convert(row, index, root, at)
            except RecordError:
                raise
            except KeyError as exc:
                raise RecordError(at, str(exc.args[0]), "missing") from None
            except (TypeError, ValueError, AttributeError) as exc:
                raise RecordError(at, "record", str(exc)) from None
            sample = validate_sample(sample, at)
            if sample.id in truths:
                raise RecordError(at, "id", f"duplicate id {sample.id!r}")
        except RecordError as exc:
            ident = row.get("question_id") or row.get("qid") if isinstance(row, dict) else None
            report.skip(exc.reason, str(ident or index), str(exc))
            continue
        samples.append(sample)
        truths[sample.id] = truth


def _mvbench_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "json" if (path / "json").is_dir() else path
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".jsonl", ".parquet"))
    if not files:
        raise BenchmarkError(f"{path}: no MVBench task files (json/<task>.json)")
    return files


def load_benchmark(path: PathLike, name: str = "auto", media_root: Optional[PathLike] = None, *,
                   check: str = "probe") -> Benchmark:
    """The usable samples of a benchmark annotation file, their ground truths and the skip report.

    `media_root` is where videos are looked for (default: the annotation file's folder; for MVBench,
    the folder holding `json/`). Records that do not fit and unusable videos are skipped and
    counted; a file that cannot be read raises BenchmarkError (or the loader's DataError).
    """
    path = Path(path)
    if not path.exists():
        raise BenchmarkError(f"benchmark data not found: {path}")
    name = detect(path, media_root) if name == "auto" else name
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; expected auto or one of {', '.join(BENCHMARKS)}")
    if name == "internal":
        return Benchmark(name, load_dataset(path, media_root, check=check))  # type: ignore[arg-type]
    report = SkipReport()
    samples: list[Sample] = []
    truths: dict[str, dict] = {}
    if name == "mvbench":
        default = path if path.is_dir() else (path.parent.parent if path.parent.name == "json" else path.parent)
        root = Path(media_root) if media_root is not None else default
        for file in _mvbench_files(path):
            _convert_rows(read_rows(file), _mvbench(file.stem), root, str(file), report, samples, truths)
    else:
        root = Path(media_root) if media_root is not None else path.parent
        convert = {"videomme": _videomme, "nextgqa": _nextgqa,
                   "charades_sta": _grounding("charades_sta", GROUNDING_FOLDERS["charades_sta"]),
                   "activitynet": _grounding("activitynet", GROUNDING_FOLDERS["activitynet"])}[name]
        _convert_rows(read_rows(path), convert, root, str(path), report, samples, truths)
    kept = check_media(samples, report, check)  # type: ignore[arg-type]
    kept_ids = {s.id for s in kept}
    return Benchmark(name, Dataset(kept, report), {k: v for k, v in truths.items() if k in kept_ids})


def write_rows(rows: list[dict[str, Any]], path: PathLike) -> Path:
    """Records as a .jsonl, .json or .parquet annotation file (tests and examples build benchmark files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path

