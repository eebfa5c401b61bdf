"""Loading the released data layout (all eleven sources, each with its own field names), the
internal JSONL/Parquet schema, and counting bad samples without stopping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rl.config import DataConfig
from rl.data.loaders import DataError, load_dataset, load_from_config, read_jsonl, write_jsonl, write_parquet
from rl.data.records import RecordError, render_options, strip_answer_markup, validate_sample
from rl.data.synthetic import encode_mp4
from rl.types import Sample

CONFIG = """
media_root: media
sources:
  DAPO-Math-17k:
    annotation: annotations/dapo.json
    fields: {id: extra_info.index}
  ViRL39K: {annotation: annotations/virl.json, media_root: virl}
  ThinkLite-VL-Hard-11k: {annotation: annotations/thinklite.json, media_root: thinklite}
  Video-R1: {annotation: annotations/video_r1.json, media_root: video_r1}
  TVBench: {annotation: annotations/tvbench.json, media_root: tvbench}
  STI-Bench: {annotation: annotations/sti.json, media_root: sti}
  MMR-VBench: {annotation: annotations/mmr.json, media_root: mmr}
  Charades-STA: {annotation: annotations/charades_sta_train.txt, media_root: charades}
  ActivityNet-grounding: {annotation: annotations/anet.json, media_root: anet}
  Time-R1: {annotation: annotations/time_r1.json, media_root: time_r1}
  NExT-GQA:
    annotation: annotations/nextgqa_val.csv
    segments: annotations/gsub_val.json
    video_map: annotations/map_vid_vidorID.json
    media_root: nextqa
"""

ANNOTATIONS = {
    "dapo.json": [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": "What is 2 + 3?"}],
            "reward_model": {"ground_truth": "5", "style": "rule"},
            "extra_info": {"index": "d0"},
        }
    ],
    "virl.json": [
        {"qid": "v1", "question": "<image>Which bar is taller?\nChoices:\nA. left\nB. right", "answer": "\\boxed{B}", "image": ["img/v1.png"]},
        {"qid": "v2", "question": "<image>What is the slope?", "answer": "\\boxed{\\frac{1}{2}}", "image": ["img/v2.png"]},
    ],
    "thinklite.json": [{"id": "t1", "problem": "<image>\nHow many circles?", "solution": "<answer> 3 </answer>", "image": "t1.jpg"}],
    "video_r1.json": [
        {
            "problem_id": 1, "problem": "What colour is the car?", "data_type": "video", "problem_type": "multiple choice",
            "options": ["A. red", "B. blue"], "solution": "<answer>B</answer>", "path": "./videos/r1.mp4",
        },
        {
            "problem_id": 2, "problem": "How many people?", "data_type": "image", "problem_type": "numerical",
            "solution": "<answer>4</answer>", "path": "./images/r2.png",
        },
        {"problem_id": 3, "problem": "Count them.", "data_type": "video", "problem_type": "counting", "solution": "2", "path": "./videos/r1.mp4"},
        {"problem_id": 4, "problem": "Is it raining?", "data_type": "video", "problem_type": "free-form", "solution": "<answer>no</answer>", "path": "./videos/gone.mp4"},
    ],
    "tvbench.json": [
        {"question": "What is the person doing?", "candidates": ["walking", "running", "sitting"], "answer": "running", "video": "tv1.mp4"},
        {"question": "What happens?", "candidates": ["x", "y"], "answer": "x", "video": "garbage.mp4"},
        {"question": "What happens next?", "candidates": ["x", "y"], "answer": "y", "video": "empty.mp4"},
    ],
    "sti.json": [
        {"id": "s1", "question": "Which object moves first?", "options": {"A": "cup", "B": "ball"}, "answer": "A",
         "video_path": "s1.mp4", "video_start": 0.5, "video_end": 2.5},
        {"id": "s2", "question": "Which moves last?", "options": {"A": "cup", "B": "ball"}, "answer": "B",
         "video_path": "s1.mp4", "video_start": 10, "video_end": 12},
        {"id": "s3", "question": "Which is red?", "options": {"A": "cup", "B": "ball"}, "answer": "C", "video_path": "s1.mp4"},
    ],
    "mmr.json": [{"question": "Where is the key?", "options": ["(A) table", "(B) floor"], "ground_truth": "(B)", "video": "m1"}],
    "anet.json": {"v_abc": {"duration": 3.0, "timestamps": [[0.5, 1.5], [1.0, 2.8]], "sentences": ["A man walks in.", " He sits down."]}},
    "time_r1.json": [
        {"video": "t/x.mp4", "sentence": "the dog jumps", "timestamp": [1.0, 2.0], "duration": 3.0},
        {"video": "t/x.mp4", "problem": "the dog lands", "solution": "<answer>2.0 to 2.9</answer>"},
    ],
    "gsub_val.json": {"1001": {"duration": 3.0, "location": {"3": [[0.5, 2.0], [0.6, 2.2]]}}},
    "map_vid_vidorID.json": {"1001": "0000/1001"},
}
CHARADES = "AO8RW 0.0 2.1##a person opens a door.\nBAD01 1.0 2.0##a person sits.\ngarbled line\n"
NEXTGQA = (
    "video_id,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
    "1001,30,112,112,why did the boy cry,fell down,3,CW,laughed,fell down,ran,slept,ate\n"
    "1001,30,112,112,what did the boy do after,1,4,TN,laughed,fell down,ran,slept,ate\n"
)
VIDEOS = ["video_r1/videos/r1.mp4", "tvbench/tv1.mp4", "sti/s1.mp4", "mmr/m1.mp4", "charades/AO8RW.mp4",
          "anet/v_abc.mp4", "time_r1/t/x.mp4", "nextqa/0000/1001.mp4"]  # fmt: skip
IMAGES = ["virl/img/v1.png", "virl/img/v2.png", "thinklite/t1.jpg", "video_r1/images/r2.png"]


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A folder laid out like the released VideoAuto-R1 data, every source with its own fields."""
    root = tmp_path_factory.mktemp("released")
    (root / "annotations").mkdir()
    (root / "data_config.yaml").write_text(CONFIG)
    for name, data in ANNOTATIONS.items():
        (root / "annotations" / name).write_text(json.dumps(data))
    (root / "annotations" / "charades_sta_train.txt").write_text(CHARADES)
    (root / "annotations" / "nextgqa_val.csv").write_text(NEXTGQA)
    media = root / "media"
    video = encode_mp4(np.zeros((30, 112, 112, 3), np.uint8), 10)  # 3 s at 10 fps
    for rel in VIDEOS:
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        (media / rel).write_bytes(video)
    for rel in IMAGES:
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (200, 10, 10)).save(media / rel)
    (media / "tvbench" / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (media / "tvbench" / "empty.mp4").write_bytes(b"")
    return root


def test_released_folder_loads_every_source(released: Path) -> None:
    data = load_dataset(released / "data_config.yaml")
    m = str(released / "media")
    by_id = {s.id: s for s in data}

    def video(source, id, ptype, question, answer, path, options=None, start=None, end=None, duration=3.0):
        return Sample(id=id, source=source, problem_type=ptype, question=question, answer=answer, options=options,
                      media_kind="video", media_path=f"{m}/{path}", video_start=start, video_end=end, duration=duration)  # fmt: skip

    def image(source, id, ptype, question, answer, path):
        return Sample(id=id, source=source, problem_type=ptype, question=question, answer=answer,
                      media_kind="image", media_path=f"{m}/{path}")  # fmt: skip

    expected = [
        Sample(id="DAPO-Math-17k/d0", source="DAPO-Math-17k", problem_type="math", question="What is 2 + 3?", answer="5"),
        image("ViRL39K", "ViRL39K/v1", "exact_match", "Which bar is taller?\nChoices:\nA. left\nB. right", "B", "virl/img/v1.png"),
        image("ViRL39K", "ViRL39K/v2", "math", "What is the slope?", "\\frac{1}{2}", "virl/img/v2.png"),
        image("ThinkLite-VL-Hard-11k", "ThinkLite-VL-Hard-11k/t1", "math", "How many circles?", "3", "thinklite/t1.jpg"),
        video("Video-R1", "Video-R1/1", "exact_match", "What colour is the car?\nA. red\nB. blue", "B",
              "video_r1/videos/r1.mp4", options=["red", "blue"]),
        image("Video-R1", "Video-R1/2", "math", "How many people?", "4", "video_r1/images/r2.png"),
        video("TVBench", "TVBench/0", "exact_match", "What is the person doing?\nA. walking\nB. running\nC. sitting",
              "B", "tvbench/tv1.mp4", options=["walking", "running", "sitting"]),
        video("STI-Bench", "STI-Bench/s1", "exact_match", "Which object moves first?\nA. cup\nB. ball", "A",
              "sti/s1.mp4", options=["cup", "ball"], start=0.5, end=2.5),
        video("MMR-VBench", "MMR-VBench/0", "exact_match", "Where is the key?\nA. table\nB. floor", "B", "mmr/m1.mp4",
              options=["table", "floor"]),
        video("Charades-STA", "Charades-STA/AO8RW_1", "iou", "a person opens a door.", [0.0, 2.1], "charades/AO8RW.mp4"),
        video("ActivityNet-grounding", "ActivityNet-grounding/v_abc_0", "iou", "A man walks in.", [0.5, 1.5], "anet/v_abc.mp4"),
        video("ActivityNet-grounding", "ActivityNet-grounding/v_abc_1", "iou", "He sits down.", [1.0, 2.8], "anet/v_abc.mp4"),
        video("Time-R1", "Time-R1/0", "iou", "the dog jumps", [1.0, 2.0], "time_r1/t/x.mp4"),
        video("Time-R1", "Time-R1/1", "iou", "the dog lands", [2.0, 2.9], "time_r1/t/x.mp4"),
        video("NExT-GQA", "NExT-GQA/1001_3", "gqa",
              render_options("why did the boy cry", ["laughed", "fell down", "ran", "slept", "ate"]),
              {"answer": "B", "segment": [0.5, 2.0]}, "nextqa/0000/1001.mp4",
              options=["laughed", "fell down", "ran", "slept", "ate"]),
    ]  # fmt: skip
    assert sorted(by_id) == sorted(s.id for s in expected)
    for want in expected:
        assert by_id[want.id] == want
    assert set(data.counts_by("source")) == {
        "DAPO-Math-17k", "ViRL39K", "ThinkLite-VL-Hard-11k", "Video-R1", "TVBench", "STI-Bench", "MMR-VBench",
        "Charades-STA", "ActivityNet-grounding", "Time-R1", "NExT-GQA",
    }  # fmt: skip
    assert data.counts_by("problem_type") == {"math": 4, "exact_match": 5, "iou": 5, "gqa": 1}


def test_bad_samples_are_skipped_and_counted(released: Path) -> None:
    report = load_dataset(released / "data_config.yaml").report
    assert dict(report.counts) == {
        "invalid_problem_type": 1,
        "missing_media": 2,
        "corrupt_media": 1,
        "empty_media": 1,
        "bad_window": 1,
        "invalid_answer": 1,
        "invalid_line": 1,
        "invalid_timestamps": 1,
    }
    assert report.ids["invalid_problem_type"] == ["Video-R1/3"]
    assert sorted(report.ids["missing_media"]) == ["Charades-STA/BAD01_2", "Video-R1/4"]
    assert report.ids["corrupt_media"] == ["TVBench/1"]
    assert report.ids["empty_media"] == ["TVBench/2"]
    assert report.ids["bad_window"] == ["STI-Bench/s2"]
    assert report.ids["invalid_answer"] == ["STI-Bench/s3"]
    assert report.ids["invalid_timestamps"] == ["NExT-GQA/1001_4"]
    assert report.total == 9 and "9 samples skipped" in report.summary()


def test_media_checks_can_be_cheaper(released: Path) -> None:
    exists = load_dataset(released / "data_config.yaml", check="exists")
    assert "corrupt_media" not in exists.report.counts and "bad_window" not in exists.report.counts
    assert exists.report.counts["missing_media"] == 2 and exists.report.counts["empty_media"] == 1
    unchecked = load_dataset(released / "data_config.yaml", check="none")
    assert len(unchecked) == len(exists) + 3


def test_media_root_override(released: Path, tmp_path: Path) -> None:
    data = load_dataset(released / "data_config.yaml", media_root=tmp_path / "elsewhere", check="none")
    videos = [s for s in data if s.media_kind != "none"]
    assert videos and all(s.media_path.startswith(str(tmp_path / "elsewhere")) for s in videos)


def test_wholly_bad_files_are_errors_naming_the_file(released: Path, tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"problem": "x", ')
    (tmp_path / "cfg.yaml").write_text("sources:\n  Video-R1: {annotation: bad.json}\n")
    with pytest.raises(DataError, match="bad.json"):
        load_dataset(tmp_path / "cfg.yaml")
    (tmp_path / "cfg2.yaml").write_text("sources:\n  TVBench: {annotation: nowhere.json, media_root: m}\n")
    with pytest.raises(DataError, match="nowhere.json"):
        load_dataset(tmp_path / "cfg2.yaml")
    (tmp_path / "cfg3.yaml").write_text("sources: [unclosed\n")
    with pytest.raises(DataError, match="cfg3.yaml"):
        load_dataset(tmp_path / "cfg3.yaml")
    (tmp_path / "cfg4.yaml").write_text("sources:\n  TVBench: {annotation: bad.json, media_rot: m}\n")
    with pytest.raises(DataError, match="media_rot"):
        load_dataset(tmp_path / "cfg4.yaml")
    with pytest.raises(DataError, match="missing.jsonl"):
        load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="junk.parquet"):
        load_dataset(tmp_path / "junk.parquet")


def test_jsonl_and_parquet_round_trip(released: Path, tmp_path: Path) -> None:
    data = load_dataset(released / "data_config.yaml")
    media = released / "media"
    for name, write in (("s.jsonl", write_jsonl), ("s.parquet", write_parquet)):
        write(data.samples, tmp_path / "abs" / name)
        assert load_dataset(tmp_path / "abs" / name).samples == data.samples
        write(data.samples, tmp_path / "rel" / name, media_root=media)
        again = load_dataset(tmp_path / "rel" / name, media_root=media)
        assert again.samples == data.samples and not again.report.total
    line = (tmp_path / "rel" / "s.jsonl").read_text().splitlines()[4]
    assert json.loads(line)["media_path"] == "video_r1/videos/r1.mp4"


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


def test_answer_markup_is_reduced_to_the_payload() -> None:
    assert strip_answer_markup("<answer>B</answer>") == "B"
    assert strip_answer_markup("so \\boxed{\\frac{\\sqrt{2}}{2}} done") == "\\frac{\\sqrt{2}}{2}"
    assert strip_answer_markup("<answer>The answer is \\boxed{12}</answer>") == "12"
    assert strip_answer_markup(" 7 ") == "7"


def test_load_from_config_synthetic(tmp_path: Path) -> None:
    cfg = DataConfig(train="synthetic", synthetic_dir=str(tmp_path / "syn"), synthetic_num_samples=8, seed=3)
    data = load_from_config(cfg)
    assert len(data) == 8 and not data.report.total
    assert data.counts_by("problem_type") == {"exact_match": 2, "math": 2, "iou": 2, "gqa": 2}


def test_other_config_shapes_and_a_single_json(released: Path) -> None:
    full = {s.id: s for s in load_dataset(released / "data_config.yaml")}
    (released / "flat.yaml").write_text(
        "TVBench: {annotation: annotations/tvbench.json, media_root: media/tvbench}\n"
        "MMR-VBench: {annotation: annotations/mmr.json, video_dir: media/mmr, problem_type: exact_match}\n"
    )
    flat = load_dataset(released / "flat.yaml")
    assert [s.id for s in flat] == ["TVBench/0", "MMR-VBench/0"]
    assert all(s == full[s.id] for s in flat)
    (released / "list.yaml").write_text(
        "media_root: media\ndatasets:\n  - {json_path: annotations/sti.json, name: STI-Bench, media_root: sti}\n"
    )
    assert [s.id for s in load_dataset(released / "list.yaml")] == ["STI-Bench/s1"]
    single = load_dataset(released / "annotations" / "video_r1.json", media_root=released / "media" / "video_r1")
    assert [s.id for s in single] == ["video_r1/1", "video_r1/2"]
    assert single[0].media_path == full["Video-R1/1"].media_path
