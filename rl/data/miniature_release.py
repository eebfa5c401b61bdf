"""A miniature VideoAuto-R1 data release: the real layout and field names, a few items per source.

`build_miniature_release(root)` writes `<root>/data/data_config.yaml` with the release's own keys
and relative `data/...` paths, and under them every one of the eleven sources with its real field
names (docs/data.md), a few good items each plus bad ones the loader must skip and count (missing
or corrupt media, a VideoR1 item without `<answer>`, a VideoR1 "free-form" item, a VIRL item with
two images, an answer that names no option, a clip window past the video's end...). Media are
real files: tiny H.264 videos (64x48, 3-5 s, PyAV) and PNG/JPEG images, so the whole path (load,
probe, decode, render) runs as it does on the real release. The text is ours; only the structure
is the release's.

Everything depends only on `seed`; a folder that is complete (its marker names the same version and
seed) is reused. `data.train: miniature_release` builds one under `data.miniature_release_dir` and
loads it through `load_dataset` with `media_root` set to the folder, as a user's release is loaded.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Union

import numpy as np
import yaml

from rl.data.synthetic import encode_mp4

VERSION = 1
"""Raised whenever the generated content changes, so a stale folder is rebuilt."""
MARKER = ".miniature_release.json"
WIDTH, HEIGHT, FPS = 64, 48, 8

CONFIG: dict[str, dict[str, str]] = {
    "DAPO-Math": {"anno_path": "data/DAPO-Math/dapo_math_filter-6k.json"},
    "VIRL": {"anno_path": "data/ViRL/virl-filter-23k.json", "data_path": "data/ViRL/"},
    "ThinkLite-VL-Hard": {
        "anno_path": "data/ThinkLite-VL-Hard/thinklite-filter-4k.json",
        "data_path": "data/ThinkLite-VL-Hard/",
    },
    "VideoR1": {"anno_path": "data/Video-R1/Video-R1-filter-17k.json", "data_path": "data/Video-R1/videos/"},
    "TVBench": {"anno_path": "data/TVBench/filter_json/", "data_path": "data/TVBench/videos/"},
    "STI-Bench": {"anno_path": "data/STI-Bench/stibench-filter-1.5k.json", "data_path": "data/STI-Bench/videos/"},
    "MMR-VBench": {"anno_path": "data/MMR-VBench/mmrv-filter-0.5k.json", "data_path": "data/MMR-VBench/videos/"},
    "Charades-STA": {
        "anno_path": "data/CharadesSTA/charades_sta_train.json",
        "data_path": "data/CharadesSTA/Charades_v1_480/",
    },
    "ActivityNet-TVG": {
        "anno_path": "data/ActivityNet-TVG/anet_tvg_filter.json",
        "data_path": "data/ActivityNet-TVG/videos_train/",
    },
    "TimeR1": {"anno_path": "data/TimeR1/train_2k5.json", "data_path": "data/TimeR1/videos/"},
    "NeXT-GQA": {"anno_path": "data/NeXT-GQA/nextgqa_train.json", "data_path": "data/NeXT-GQA/nextgqa_train/"},
}
"""The release's data_config.yaml, key for key (../shared/data/released_data_config.yaml)."""

ANNOTATIONS: dict[str, Any] = {
    "DAPO-Math": [
        {"data_source": "math_dapo", "prompt": "What is 2 + 3?", "solution": "5"},
        {"data_source": "math_dapo", "prompt": "Compute \\frac{1}{2} + \\frac{1}{4}.", "solution": "\\frac{3}{4}"},
        {"data_source": "math_dapo", "prompt": "", "solution": "1"},  # empty prompt
    ],
    "VIRL": [
        {"question": "<image>Which bar is taller?\nA. left\nB. right", "answer": "\\boxed{B}", "image": ["images/virl_0.png"]},
        {"question": "<image>What is the slope of the line?", "answer": "The slope is \\boxed{\\frac{1}{2}}.",
         "image": ["images/virl_1.png"]},
        {"question": "<image><image>Are the two charts equal?", "answer": "\\boxed{yes}",
         "image": ["images/virl_0.png", "images/virl_1.png"]},  # two images
        {"question": "<image>What colour is the sky?", "answer": "\\boxed{blue}", "image": ["images/virl_gone.png"]},
        {"question": "<image>Which bar is shorter?", "answer": "A", "image": ["images/virl_0.png"]},  # no box
    ],
    "ThinkLite-VL-Hard": [
        {"problem": "<image>\nHow many circles are there?", "ground_truth": "3", "image": "images/tl_0.jpg",
         "problem_type": "numerical"},
        {"problem": "<image>Which shape is red?\nA. circle\nB. square", "ground_truth": "A", "image": "images/tl_1.jpg",
         "problem_type": "multiple choice"},
        {"problem": "<image>How many squares?", "ground_truth": "2", "image": "images/tl_corrupt.jpg",
         "problem_type": "numerical"},  # corrupt image
    ],
    "VideoR1": [
        {"problem_id": 1, "problem": "What colour is the car?", "data_type": "video", "problem_type": "multiple choice",
         "options": ["A. red", "B. blue", "C. green"], "solution": "<answer>B</answer>",
         "path": "./LLaVA-Video-178K/r1_0.mp4", "data_source": "LLaVA-Video-178K"},
        {"problem_id": 2, "problem": "How many people are in the picture?", "data_type": "image",
         "problem_type": "numerical", "options": [], "solution": "<answer>4</answer>", "path": "./CLEVR/r1_1.png",
         "data_source": "CLEVR"},
        {"problem_id": 3, "problem": "Which way does the car turn?", "data_type": "video",
         "problem_type": "multiple choice", "options": ["A. left", "B. right"], "solution": "B",
         "path": "./LLaVA-Video-178K/r1_0.mp4", "data_source": "LLaVA-Video-178K"},  # no <answer>
        {"problem_id": 4, "problem": "Describe the scene.", "data_type": "video", "problem_type": "free-form",
         "options": [], "solution": "<answer>A street.</answer>", "path": "./LLaVA-Video-178K/r1_0.mp4",
         "data_source": "LLaVA-Video-178K"},  # dropped problem type
        {"problem_id": 5, "problem": "How many cars pass?", "data_type": "video", "problem_type": "numerical",
         "options": [], "solution": "<answer>2</answer>", "path": "./LLaVA-Video-178K/gone.mp4",
         "data_source": "LLaVA-Video-178K"},  # missing video
    ],
    "TVBench": {
        "action_sequence": [
            {"video": "seq_0.mp4", "question": "What did the person do first?", "candidates": ["sit down", "stand up", "walk"],
             "answer": "stand up", "start": 0.5, "end": 2.5},
        ],
        "action_localization": [
            {"video": "loc_0.mp4", "question": "When does the person jump?", "candidates": ["beginning", "end"],
             "answer": "end", "start": 1.0, "end": 3.0},
            {"video": "loc_0.mp4", "question": "When does the person fall?", "candidates": ["beginning", "end"],
             "answer": "beginning", "start": 10.0, "end": 12.0},  # window past the video's end
        ],
        "scene_transition": [
            {"video": "scene_0.mp4", "question": "How does the scene change?", "candidates": ["indoor to outdoor", "outdoor to indoor"],
             "answer": "outdoor to indoor", "start": 0.0, "end": 1.0},  # not a clipped subset: start/end unused
            {"video": "scene_0.mp4", "question": "What is the first scene?", "candidates": ["kitchen", "garden"],
             "answer": "garage"},  # answer is no candidate
        ],
    },
    "STI-Bench": [
        {"Video": "sti_0.mp4", "Question": "Which object moves first?", "Candidates": {"A": "cup", "B": "ball", "C": "box"},
         "Answer": "B", "time_start": 0.5, "time_end": 2.0, "Task": "Dimensional Measurement", "Scene": "Desktop"},
        {"Video": "sti_0.mp4", "Question": "Which object is largest?", "Candidates": {"A": "cup", "B": "ball"},
         "Answer": "D", "time_start": 0, "time_end": 3, "Task": "Dimensional Measurement", "Scene": "Desktop"},
        {"Video": "sti_empty.mp4", "Question": "Which object is red?", "Candidates": {"A": "cup", "B": "ball"},
         "Answer": "A", "time_start": 0, "time_end": 1, "Task": "Dimensional Measurement", "Scene": "Desktop"},
    ],
    "MMR-VBench": [
        {"video": "mmr_0.mp4", "question": "Where is the key hidden?", "options": ["(A) table", "(B) floor", "(C) shelf", "", ""],
         "correctAnswer": "(C)"},
        {"video": "mmr_0.mp4", "question": "Who took the key?", "options": ["(A) the man", "(B) the dog", "", ""],
         "correctAnswer": "(D)"},  # the key is an empty option
    ],
    "Charades-STA": [
        {"video": "AO8RW", "description": "a person opens a door.", "timestamps": [0.0, 2.1]},
        {"video": "BAD01", "description": "a person sits down.", "timestamps": [1.0, 2.0]},  # missing video
    ],
    "ActivityNet-TVG": [
        {"video": "v_abc.mp4", "description": "A man walks into the room.", "timestamps": [0.5, 1.5]},
        {"video": "v_abc.mp4", "description": "He sits down.", "timestamps": [2.8, 1.0]},  # reversed segment
    ],
    "TimeR1": [
        {"video": "tr_0.mp4", "sentence": "the dog jumps over the bar", "timestamp": [1.0, 2.0]},
        {"video": "tr_0.mp4", "sentence": "the dog lands"},  # no timestamp
    ],
    "NeXT-GQA": [
        {"video": "1001.mp4", "question": "why did the boy cry", "options": ["laughed", "fell down", "ran", "slept", "ate"],
         "answer": "fell down", "timestamps": [[0.5, 2.0], [0.6, 2.2]]},
        {"video": "1001.mp4", "question": "what did the boy do after falling", "options": ["laughed", "fell down", "ran", "slept", "ate"],
         "answer": "C", "timestamps": [1.0, 2.5]},
        {"video": "1001.mp4", "question": "where is the boy", "options": ["park", "room"], "answer": "beach",
         "timestamps": [0.0, 1.0]},  # answer is no option
    ],
}  # fmt: skip
"""The items, with the release's field names; the comments mark the ones the loader must skip."""

VIDEOS: dict[str, float] = {
    "data/Video-R1/videos/LLaVA-Video-178K/r1_0.mp4": 3.0,
    "data/TVBench/videos/action_sequence/seq_0.mp4": 4.0,
    "data/TVBench/videos/action_localization/loc_0.mp4": 4.0,
    "data/TVBench/videos/scene_transition/scene_0.mp4": 2.0,
    "data/STI-Bench/videos/sti_0.mp4": 3.0,
    "data/MMR-VBench/videos/mmr_0.mp4": 3.0,
    "data/CharadesSTA/Charades_v1_480/AO8RW.mp4": 3.0,
    "data/ActivityNet-TVG/videos_train/v_abc.mp4": 5.0,
    "data/TimeR1/videos/tr_0.mp4": 3.0,
    "data/NeXT-GQA/nextgqa_train/1001.mp4": 3.0,
}
"""Videos (path under the root -> seconds at FPS)."""
IMAGES = (
    "data/ViRL/images/virl_0.png",
    "data/ViRL/images/virl_1.png",
    "data/ThinkLite-VL-Hard/images/tl_0.jpg",
    "data/ThinkLite-VL-Hard/images/tl_1.jpg",
    "data/Video-R1/videos/CLEVR/r1_1.png",
)
BROKEN = {
    "data/ThinkLite-VL-Hard/images/tl_corrupt.jpg": "corrupt",
    "data/STI-Bench/videos/sti_empty.mp4": "empty",
}
"""Media files that exist but cannot be used."""


def _video(rng: np.random.Generator, seconds: float) -> bytes:
    """A coloured square drifting across a dark background."""
    frames = int(round(seconds * FPS))
    video = np.full((frames, HEIGHT, WIDTH, 3), 20, np.uint8)
    colour = rng.integers(60, 256, size=3).astype(np.uint8)
    y = int(rng.integers(4, HEIGHT - 20))
    for t in range(frames):
        x = 2 + (t * (WIDTH - 20)) // max(frames - 1, 1)
        video[t, y : y + 16, x : x + 16] = colour
    return encode_mp4(video, FPS)


def _image(rng: np.random.Generator, suffix: str) -> bytes:
    from PIL import Image

    pixels = np.full((HEIGHT, WIDTH, 3), 235, np.uint8)
    for _ in range(3):
        y, x = int(rng.integers(0, HEIGHT - 12)), int(rng.integers(0, WIDTH - 12))
        pixels[y : y + 12, x : x + 12] = rng.integers(0, 200, size=3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if suffix in (".jpg", ".jpeg") else "PNG", quality=90)
    return buffer.getvalue()


def _write(path: Path, data: Union[bytes, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def _marker(seed: int) -> dict[str, int]:
    return {"version": VERSION, "seed": seed}


def is_complete(root: Union[str, os.PathLike], seed: int = 0) -> bool:
    """The folder was fully written by this version with this seed."""
    marker = Path(root) / MARKER
    try:
        return json.loads(marker.read_text()) == _marker(seed)
    except (OSError, ValueError):
        return False


def build_miniature_release(root: Union[str, os.PathLike], seed: int = 0) -> Path:
    """Write the miniature release under `root` (reused when complete); returns `root`.

    Built in a sibling temporary folder and renamed into place, so an interrupted build leaves no
    half-written release behind.
    """
    root = Path(root)
    if is_complete(root, seed):
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    header = "# A miniature VideoAuto-R1 release (rl.data.miniature_release): the real keys and paths.\n"
    _write(tmp / "data" / "data_config.yaml", header + yaml.safe_dump(CONFIG, sort_keys=False))
    for name, items in ANNOTATIONS.items():
        anno = tmp / CONFIG[name]["anno_path"]
        if name == "TVBench":
            for subset, subset_items in items.items():
                _write(anno / f"{subset}.json", json.dumps(subset_items, indent=1, ensure_ascii=False))
        else:
            _write(anno, json.dumps(items, indent=1, ensure_ascii=False))
    for k, (rel, seconds) in enumerate(VIDEOS.items()):
        _write(tmp / rel, _video(np.random.default_rng([seed, k]), seconds))
    for k, rel in enumerate(IMAGES):
        _write(tmp / rel, _image(np.random.default_rng([seed, 1000 + k]), Path(rel).suffix))
    for rel, kind in BROKEN.items():
        _write(tmp / rel, np.random.default_rng([seed, 2000]).bytes(512) if kind == "corrupt" else b"")
    _write(tmp / MARKER, json.dumps(_marker(seed)))
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)
    return root
