"""The released data folder loads as released: the miniature release (tests/make_release.py), every
source with its real field names, counted per source with the skip reasons, each source's records
exact (problem type, answer, media path, window, question text)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rl.config import DataConfig
from rl.data.loaders import load_dataset, load_from_config
from rl.data.miniature_release import CONFIG, build_miniature_release
from rl.render import user_text
from rl.types import Sample

REPO = Path(__file__).resolve().parent.parent
RELEASED_CONFIG = Path(__file__).resolve().parent / "fixtures" / "released_data_config.yaml"
"""The release's data/data_config.yaml, verbatim."""

KEPT = {
    "DAPO-Math": 2, "VIRL": 2, "ThinkLite-VL-Hard": 2, "VideoR1": 2, "TVBench": 3, "STI-Bench": 1, "MMR-VBench": 1,
    "Charades-STA": 1, "ActivityNet-TVG": 1, "TimeR1": 1, "NeXT-GQA": 2,
}  # fmt: skip
SKIPPED = {
    "DAPO-Math": {"invalid_prompt": 1},
    "VIRL": {"multi_image": 1, "no_boxed_answer": 1, "missing_media": 1},
    "ThinkLite-VL-Hard": {"corrupt_media": 1},
    "VideoR1": {"no_answer_tag": 1, "unsupported_problem_type": 1, "missing_media": 1},
    "TVBench": {"answer_not_in_options": 1, "bad_window": 1},
    "STI-Bench": {"answer_not_in_options": 1, "empty_media": 1},
    "MMR-VBench": {"answer_not_in_options": 1},
    "Charades-STA": {"missing_media": 1},
    "ActivityNet-TVG": {"invalid_answer": 1},
    "TimeR1": {"invalid_timestamp": 1},
    "NeXT-GQA": {"answer_not_in_options": 1},
}
SKIPPED_IDS = {
    "invalid_prompt": ["DAPO-Math/2"],
    "multi_image": ["VIRL/2"],
    "no_boxed_answer": ["VIRL/4"],
    "missing_media": ["VIRL/3", "VideoR1/4", "Charades-STA/1"],
    "corrupt_media": ["ThinkLite-VL-Hard/2"],
    "no_answer_tag": ["VideoR1/2"],
    "unsupported_problem_type": ["VideoR1/3"],
    "answer_not_in_options": ["TVBench/scene_transition/1", "STI-Bench/1", "MMR-VBench/1", "NeXT-GQA/2"],
    "bad_window": ["TVBench/action_localization/1"],
    "empty_media": ["STI-Bench/2"],
    "invalid_answer": ["ActivityNet-TVG/1"],
    "invalid_timestamp": ["TimeR1/1"],
}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return build_miniature_release(tmp_path_factory.mktemp("mini") / "release", seed=0)


@pytest.fixture(scope="module")
def loaded(release: Path):
    return load_dataset(release / "data" / "data_config.yaml", release)


def test_the_miniature_has_the_release_layout(release: Path) -> None:
    assert yaml.safe_load((release / "data" / "data_config.yaml").read_text()) == CONFIG
    assert yaml.safe_load(RELEASED_CONFIG.read_text()) == CONFIG
    assert sorted(p.name for p in (release / "data" / "TVBench" / "filter_json").iterdir()) == [
        "action_localization.json", "action_sequence.json", "scene_transition.json",
    ]  # fmt: skip


def test_counts_per_source_and_skip_reasons(loaded) -> None:
    assert loaded.counts_by("source") == KEPT
    assert {s: dict(c) for s, c in loaded.report.by_source.items()} == SKIPPED
    assert {k: sorted(v) for k, v in loaded.report.ids.items()} == {k: sorted(v) for k, v in SKIPPED_IDS.items()}
    assert loaded.counts_by("media_kind") == {"none": 2, "image": 5, "video": 11}
    assert loaded.counts_by("problem_type") == {"math": 5, "exact_match": 8, "iou": 3, "gqa": 2}
    summary = loaded.summary()
    assert "  VideoR1: 2 kept (image 1, video 1); skipped 3: " in summary
    assert "no_answer_tag 1" in summary and "total: 18 kept; 17 samples skipped" in summary


def _expected(root: Path) -> list[Sample]:
    d = root / "data"

    def video(id, source, ptype, question, answer, path, options=None, start=None, end=None, duration=3.0):
        return Sample(id=id, source=source, problem_type=ptype, question=question, answer=answer, options=options,
                      media_kind="video", media_path=str(d / path), video_start=start, video_end=end, duration=duration)  # fmt: skip

    def image(id, source, ptype, question, answer, path):
        return Sample(id=id, source=source, problem_type=ptype, question=question, answer=answer, media_kind="image",
                      media_path=str(d / path))  # fmt: skip

    return [
        Sample(id="DAPO-Math/1", source="DAPO-Math", problem_type="math", question="Compute \\frac{1}{2} + \\frac{1}{4}.",
               answer="\\frac{3}{4}"),
        image("VIRL/0", "VIRL", "exact_match", "Which bar is taller?\nA. left\nB. right", "B", "ViRL/images/virl_0.png"),
        image("VIRL/1", "VIRL", "math", "What is the slope of the line?", "\\frac{1}{2}", "ViRL/images/virl_1.png"),
        image("ThinkLite-VL-Hard/0", "ThinkLite-VL-Hard", "math", "How many circles are there?", "3",
              "ThinkLite-VL-Hard/images/tl_0.jpg"),
        image("ThinkLite-VL-Hard/1", "ThinkLite-VL-Hard", "exact_match", "Which shape is red?\nA. circle\nB. square", "A",
              "ThinkLite-VL-Hard/images/tl_1.jpg"),
        video("VideoR1/0", "VideoR1", "exact_match", "What colour is the car?Options:\nA. red\nB. blue\nC. green\n", "B",
              "Video-R1/videos/LLaVA-Video-178K/r1_0.mp4", options=["red", "blue", "green"]),
        image("VideoR1/1", "VideoR1", "math", "How many people are in the picture?", "4", "Video-R1/videos/CLEVR/r1_1.png"),
        video("TVBench/action_sequence/0", "TVBench", "exact_match",
              "Question: What did the person do first?\nOptions:\nA. sit down\nB. stand up\nC. walk\n", "B",
              "TVBench/videos/action_sequence/seq_0.mp4", options=["sit down", "stand up", "walk"], start=0.5, end=2.5,
              duration=4.0),
        video("TVBench/action_localization/0", "TVBench", "exact_match",
              "Question: When does the person jump?\nOptions:\nA. beginning\nB. end\n", "B",
              "TVBench/videos/action_localization/loc_0.mp4", options=["beginning", "end"], start=1.0, end=3.0, duration=4.0),
        video("TVBench/scene_transition/0", "TVBench", "exact_match",
              "Question: How does the scene change?\nOptions:\nA. indoor to outdoor\nB. outdoor to indoor\n", "B",
              "TVBench/videos/scene_transition/scene_0.mp4", options=["indoor to outdoor", "outdoor to indoor"],
              duration=2.0),
        video("STI-Bench/0", "STI-Bench", "exact_match",
              "From 0.5 s to 2.0 s. Which object moves first?\n(A) cup\n(B) ball\n(C) box", "B",
              "STI-Bench/videos/sti_0.mp4", options=["cup", "ball", "box"]),
        video("MMR-VBench/0", "MMR-VBench", "exact_match", "Where is the key hidden?\nOptions:\nA. table\nB. floor\nC. shelf", "C",
              "MMR-VBench/videos/mmr_0.mp4", options=["table", "floor", "shelf"]),
        video("Charades-STA/0", "Charades-STA", "iou", "a person opens a door.", [0.0, 2.1],
              "CharadesSTA/Charades_v1_480/AO8RW.mp4"),
        video("ActivityNet-TVG/0", "ActivityNet-TVG", "iou", "A man walks into the room.", [0.5, 1.5],
              "ActivityNet-TVG/videos_train/v_abc.mp4", duration=5.0),
        video("TimeR1/0", "TimeR1", "iou", "the dog jumps over the bar", [1.0, 2.0], "TimeR1/videos/tr_0.mp4"),
        video("NeXT-GQA/0", "NeXT-GQA", "gqa", "why did the boy cry", {"answer": "B", "segment": [0.5, 2.0]},
              "NeXT-GQA/nextgqa_train/1001.mp4", options=["laughed", "fell down", "ran", "slept", "ate"]),
        video("NeXT-GQA/1", "NeXT-GQA", "gqa", "what did the boy do after falling", {"answer": "C", "segment": [1.0, 2.5]},
              "NeXT-GQA/nextgqa_train/1001.mp4", options=["laughed", "fell down", "ran", "slept", "ate"]),
    ]  # fmt: skip


def test_every_source_gives_exact_records(release: Path, loaded) -> None:
    by_id = {s.id: s for s in loaded}
    expected = _expected(release)
    assert {s.source for s in expected} == set(KEPT)
    for want in expected:
        assert by_id[want.id] == want


def test_user_texts_of_released_records_are_the_official_strings(loaded) -> None:
    by_id = {s.id: s for s in loaded}
    assert user_text(by_id["VideoR1/0"]) == (
        "What colour is the car?Options:\nA. red\nB. blue\nC. green\n\nPut your final answer in \\boxed{}."
    )
    assert user_text(by_id["TVBench/action_sequence/0"]) == (
        "Question: What did the person do first?\nOptions:\nA. sit down\nB. stand up\nC. walk\n\n"
        "Put your final answer in \\boxed{}."
    )
    assert user_text(by_id["Charades-STA/0"]) == (
        "Locate the start and end timestamps of the video segment corresponding to the description: "
        "a person opens a door. Please provide the start and end timestamps (in seconds, precise to one decimal "
        "places) in the format \\boxed{[start, end]}."
    )
    assert user_text(by_id["NeXT-GQA/0"]) == (
        "Question: why did the boy cry\nOptions:\nA. laughed\nB. fell down\nC. ran\nD. slept\nE. ate\n"
        "Please answer the question, and then provide the video segment that best supports your answer. "
        "The start and end timestamps must be in seconds with exactly one decimal place.\n"
        "Output format: \\boxed{answer <> [start, end]}. For example: \\boxed{A <> [20.3, 30.8]}."
    )
    assert user_text(by_id["DAPO-Math/1"]) == "Compute \\frac{1}{2} + \\frac{1}{4}.\nPut your final answer in \\boxed{}."


def test_the_verbatim_release_config_loads_from_the_working_directory(release: Path, loaded, monkeypatch) -> None:
    """The real data_config.yaml text, relative `data/...` paths resolved from the job's directory."""
    monkeypatch.chdir(release)
    from_cwd = load_dataset(RELEASED_CONFIG)
    assert from_cwd.samples == loaded.samples
    assert dict(from_cwd.report.counts) == dict(loaded.report.counts)


def test_media_root_resolves_annotation_and_media_paths(release: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(release / "data", moved / "data")
    data = load_dataset(RELEASED_CONFIG, moved, check="none")
    assert all(s.media_path.startswith(str(moved / "data")) for s in data if s.media_path)
    assert len(data) == 18 + 6  # check="none" keeps the 6 items only the media probe rejects


def test_data_train_miniature_release_builds_once_and_loads(tmp_path: Path) -> None:
    cfg = DataConfig(train="miniature_release", miniature_release_dir=str(tmp_path / "mr"))
    first = load_from_config(cfg)
    assert first.counts_by("source") == KEPT
    stamp = (tmp_path / "mr" / "data" / "data_config.yaml").stat().st_mtime_ns
    second = load_from_config(cfg)
    assert second.samples == first.samples
    assert (tmp_path / "mr" / "data" / "data_config.yaml").stat().st_mtime_ns == stamp


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_and_the_script_writes_it(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "make_release.py"), str(out)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "18 samples" in proc.stdout and "NeXT-GQA: 2 kept" in proc.stdout
    assert _digest(out) == _digest(release)
