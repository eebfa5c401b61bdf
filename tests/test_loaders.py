"""Loading: the data_config.yaml checks (unknown sources and keys, missing files are errors that
name them), media checks, the internal JSONL/Parquet schema, and counting bad samples without
stopping. The per-source rules of the release are tested on the miniature release in test_release.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rl.config import DataConfig
from rl.data.files import read_jsonl, write_jsonl, write_parquet
from rl.data.loaders import load_dataset, load_from_config
from rl.data.miniature_release import build_miniature_release
from rl.data.records import DataError, RecordError, validate_sample
from rl.types import Sample


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return build_miniature_release(tmp_path_factory.mktemp("mini") / "release", seed=0)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data_config.yaml"
    path.write_text(text)
    return path


def test_data_config_errors_name_the_file_source_and_key(release: Path, tmp_path: Path) -> None:
    anno = "data/TVBench/filter_json/"
    with pytest.raises(DataError, match="unknown key 'anno_pth'"):
        load_dataset(_config(tmp_path, f"TVBench: {{anno_pth: {anno}, data_path: v/}}\n"), release)
    with pytest.raises(DataError, match="source 'Video-R1': unknown source .*VideoR1"):
        load_dataset(_config(tmp_path, "Video-R1: {anno_path: x.json, data_path: v/}\n"), release)
    with pytest.raises(DataError, match="annotation file not found: .*nowhere.json"):
        load_dataset(_config(tmp_path, "VideoR1: {anno_path: data/nowhere.json, data_path: v/}\n"), release)
    with pytest.raises(DataError, match="directory of per-subset JSON files"):
        load_dataset(_config(tmp_path, f"TVBench: {{anno_path: {anno}action_sequence.json, data_path: v/}}\n"), release)
    with pytest.raises(DataError, match="no data_path"):
        load_dataset(_config(tmp_path, "TimeR1: {anno_path: data/TimeR1/train_2k5.json}\n"), release)
    with pytest.raises(DataError, match="data_config.yaml"):
        load_dataset(_config(tmp_path, "TimeR1: [unclosed\n"), release)
    bad_json = tmp_path / "data" / "bad.json"
    bad_json.parent.mkdir()
    bad_json.write_text('[{"sentence": "x", ')
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        load_dataset(_config(tmp_path, "TimeR1: {anno_path: data/bad.json, data_path: v/}\n"), tmp_path)
    with pytest.raises(DataError, match="missing.jsonl"):
        load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="junk.parquet"):
        load_dataset(tmp_path / "junk.parquet")
    with pytest.raises(DataError, match="expected a data_config .yaml, a .jsonl or a .parquet"):
        load_dataset(release / "data" / "TimeR1" / "train_2k5.json")


def test_one_source_of_the_release_alone(release: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, "TimeR1:\n  anno_path: data/TimeR1/train_2k5.json\n  data_path: data/TimeR1/videos/\n")
    data = load_dataset(config, release)
    assert [s.id for s in data] == ["TimeR1/0"] and dict(data.report.counts) == {"invalid_timestamp": 1}


def test_media_checks_can_be_cheaper(release: Path) -> None:
    config = release / "data" / "data_config.yaml"
    exists = load_dataset(config, release, check="exists")
    assert "corrupt_media" not in exists.report.counts and "bad_window" not in exists.report.counts
    assert exists.report.counts["missing_media"] == 3 and exists.report.counts["empty_media"] == 1
    unchecked = load_dataset(config, release, check="none")
    assert len(unchecked) == len(exists) + 4
    probed = load_dataset(config, release)
    assert len(exists) == len(probed) + 2
    assert all(s.duration for s in probed if s.media_kind == "video")


def test_jsonl_and_parquet_round_trip(release: Path, tmp_path: Path) -> None:
    data = load_dataset(release / "data" / "data_config.yaml", release)
    for name, write in (("s.jsonl", write_jsonl), ("s.parquet", write_parquet)):
        write(data.samples, tmp_path / "abs" / name)
        assert load_dataset(tmp_path / "abs" / name).samples == data.samples
        write(data.samples, tmp_path / "rel" / name, media_root=release)
        again = load_dataset(tmp_path / "rel" / name, media_root=release)
        assert again.samples == data.samples and not again.report.total
    records = [json.loads(line) for line in (tmp_path / "rel" / "s.jsonl").read_text().splitlines()]
    r1 = next(r for r in records if r["id"] == "VideoR1/0")
    assert r1["media_path"] == "data/Video-R1/videos/LLaVA-Video-178K/r1_0.mp4"
    assert r1["question"].endswith("C. green\n")


def test_jsonl_bad_lines_are_counted(tmp_path: Path) -> None:
    good = {"id": "a", "source": "x", "problem_type": "math", "question": "1+1?", "answer": "2"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "b", "problem_type": "regression"}),
        json.dumps({**good, "id": "c", "answre": "2"}),
        json.dumps({**good, "id": "d", "problem_type": "iou", "answer": [3.0, 1.0]}),
        json.dumps({**good, "id": "a"}),
        json.dumps({**good, "id": "e", "media_kind": "video"}),
    ]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    data = read_jsonl(tmp_path / "s.jsonl")
    assert [s.id for s in data] == ["a"]
    assert dict(data.report.counts) == {
        "invalid_line": 1, "invalid_problem_type": 1, "invalid_answre": 1, "invalid_answer": 1, "invalid_id": 1,
        "invalid_media_path": 1,
    }  # fmt: skip


def test_validation_names_file_index_and_field() -> None:
    sample = Sample(id="q", source="s", problem_type="gqa", question="Which?", answer={"answer": "E", "segment": [1, 2]},
                    options=["a", "b"])  # fmt: skip
    with pytest.raises(RecordError, match=r"f\.json\[7\]: field 'answer'"):
        validate_sample(sample, "f.json[7]")
    ok = validate_sample(Sample(id="q", source="s", problem_type="iou", question="x", answer=[[1, 2], (3, 4)]), "w")
    assert ok.answer == [[1.0, 2.0], [3.0, 4.0]]
    bad_window = Sample(id="q", source="s", problem_type="math", question="x", answer="1", media_kind="video",
                        media_path="v.mp4", video_start=3, video_end=2)  # fmt: skip
    with pytest.raises(RecordError, match="video_end"):
        validate_sample(bad_window, "w")
    with pytest.raises(RecordError, match="field 'question': is empty"):
        validate_sample(Sample(id="q", source="s", problem_type="math", question=" \n", answer="1"), "w")


def test_load_from_config_synthetic(tmp_path: Path) -> None:
    cfg = DataConfig(train="synthetic", synthetic_dir=str(tmp_path / "syn"), synthetic_num_samples=8, seed=3)
    data = load_from_config(cfg)
    assert len(data) == 8 and not data.report.total
    assert data.counts_by("problem_type") == {"exact_match": 2, "math": 2, "iou": 2, "gqa": 2}
