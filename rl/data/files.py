"""The internal schema on disk: JSONL and Parquet, read with line/row numbers, written atomically."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional

from rl.data.records import (
    DataError,
    Dataset,
    PathLike,
    RecordError,
    SkipReport,
    sample_from_dict,
    sample_to_dict,
)
from rl.runtime import plain_file_mode
from rl.types import Sample

logger = logging.getLogger(__name__)



def _resolve_media(sample: Sample, root: Path) -> Sample:
    if sample.media_path is None or os.path.isabs(sample.media_path):
        return sample
    return dataclasses.replace(sample, media_path=str(root / sample.media_path))


class BadLine(RecordError):
    """A JSONL line that is not JSON, named `file:line` (skipped and counted as `invalid_line`)."""

    def __init__(self, path: Path, number: int, exc: json.JSONDecodeError) -> None:
        super().__init__(f"{path}:{number}", "line", exc.msg)
        self.args = (f"{path}:{number}: not valid JSON ({exc.msg}: column {exc.colno})",)


def read_json_lines(path: PathLike) -> list[Any]:
    """Objects of a JSONL file; a bad line becomes a `BadLine` in its place, for the caller to skip
    and count. The one JSONL reader of training, infer and eval, so all three treat a bad line alike."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read data file {path}: {exc}") from None
    items: list[Any] = []
    failed = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            failed += 1
            items.append(BadLine(path, number, exc))
    if failed and failed == len(items):
        raise DataError(f"{path}: no line is valid JSON")
    return items


def read_jsonl(path: PathLike, media_root: Optional[PathLike] = None) -> Dataset:
    """Internal-schema JSONL; relative media paths resolve against `media_root` (default: the file's folder)."""
    path = Path(path)
    root = Path(media_root) if media_root is not None else path.parent
    report = SkipReport()
    samples: list[Sample] = []
    seen: set[str] = set()
    for index, record in enumerate(read_json_lines(path)):
        where = f"{path}[{index}]"
        sample_id = str(record.get("id")) if isinstance(record, dict) and record.get("id") else f"{path.name}/{index}"
        try:
            if isinstance(record, RecordError):
                raise record
            sample = sample_from_dict(record, where)
            if sample.id in seen:
                raise RecordError(where, "id", f"duplicate id {sample.id!r}")
        except RecordError as exc:
            source = str(record.get("source") or "") if isinstance(record, dict) else ""
            report.skip(exc.reason, sample_id, str(exc), source=source)
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
        plain_file_mode(tmp)
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
            report.skip(exc.reason, str(row.get("id") or index), str(exc), source=str(row.get("source") or ""))
            continue
        seen.add(sample.id)
        samples.append(_resolve_media(sample, root))
    return Dataset(samples, report)


