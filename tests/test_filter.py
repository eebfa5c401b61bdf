"""The difficulty filter: all-right / all-wrong QA prompts dropped, grounding kept whole, on the real engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launch.filter import decide
from rl.data.loaders import load_dataset
from rl.data.synthetic import generate_synthetic

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("ptype,correct,verdict", [
    ("exact_match", [True] * 8, "all_right"),
    ("math", [False] * 8, "all_wrong"),
    ("exact_match", [True] + [False] * 7, "kept"),
    ("iou", [False] * 8, "kept"),
    ("gqa", [True] * 8, "kept"),
])
def test_decide_drops_only_uninformative_qa(ptype, correct, verdict):
    assert decide(ptype, correct) == verdict


@pytest.mark.slow
def test_filter_end_to_end_on_the_engine(tiny_qwen25, tmp_path):
    samples = generate_synthetic(tmp_path / "syn", 8, seed=1)
    out = tmp_path / "filtered.jsonl"
    run = subprocess.run(
        [str(Path(sys.executable).parent / "thinkonce"), "filter", "--config", "configs/tiny_cpu.yaml",
         "--data", str(tmp_path / "syn" / "samples.jsonl"), "--out", str(out), "--k", "4",
         f"model.path={tiny_qwen25}", "rollout.max_new_tokens=16"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    stats = json.loads(Path(f"{out}.stats.json").read_text())
    assert stats["input"] == 8
    counted = sum(sum(c.values()) for c in stats["by_type"].values())
    assert counted == 8
    kept = load_dataset(out).samples
    assert len(kept) == stats["output"]
    grounding = {s.id for s in samples if s.problem_type in ("iou", "gqa")}
    assert grounding <= {s.id for s in kept}, "grounding prompts are kept whole"
    qa_kept = sum(stats["by_type"].get(t, {}).get("kept", 0) for t in ("exact_match", "math"))
    assert len(kept) == len(grounding) + qa_kept
