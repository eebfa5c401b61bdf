"""Resume refuses to continue a run silently changed: a config key that alters the math or the data
order, or a different dataset (ids, order, or content: answers, problem types, media files);
`--resume-allow-changes` accepts named changes."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from rl.checkpoint import (CheckpointManager, Manifest, ResumeRefused, check_resume, dataset_fingerprint,
                           write_dataset_samples)
from rl.config import load_config, resume_changes
from rl.types import Sample

REPO = Path(__file__).resolve().parent.parent
IDS = [Sample(id=f"s{i}", source="test", problem_type="math", question=f"{i}+1?", answer=str(i + 1)) for i in range(10)]


def _checkpoint(run_dir: Path, overrides: list[str], samples: list[Sample] = IDS) -> tuple[Path, Manifest]:
    cfg = load_config(REPO / "configs/tiny_cpu.yaml", overrides)
    manifest = Manifest(step=2, samples_consumed=4, config=cfg.model_dump(mode="json"),
                        dataset=dataset_fingerprint(samples, cfg.trainer.seed, cfg.data.shuffle))
    path = CheckpointManager(run_dir).save(manifest, lambda tmp: write_dataset_samples(tmp, samples))
    return path, CheckpointManager.read_manifest(path)


def test_changed_math_key_is_refused_by_name_and_allowed_when_named(tmp_path):
    path, manifest = _checkpoint(tmp_path, [])
    changed = load_config(REPO / "configs/tiny_cpu.yaml", ["grpo.kl_coef=0.5", "logging.progress=false", "sync.bucket_mb=1"])
    with pytest.raises(ResumeRefused, match=r"grpo\.kl_coef: .* in the checkpoint, 0\.5 now") as err:
        check_resume(path, manifest, changed, IDS)
    assert "logging" not in str(err.value) and "sync" not in str(err.value), "reporting and transport keys are free"
    assert "--resume-allow-changes grpo.kl_coef" in str(err.value)
    check_resume(path, manifest, changed, IDS, allow=["grpo.kl_coef"])


def test_data_order_keys_are_guarded_and_neutral_keys_are_not():
    base = load_config(REPO / "configs/tiny_cpu.yaml").model_dump(mode="json")
    order = load_config(REPO / "configs/tiny_cpu.yaml", ["trainer.seed=7", "data.shuffle=false", "trainer.prompts_per_round=3"])
    assert [key for key, _, _ in resume_changes(base, order.model_dump(mode="json"))] == [
        "data.shuffle", "trainer.prompts_per_round", "trainer.seed"]
    neutral = load_config(REPO / "configs/tiny_cpu.yaml", [
        "trainer.total_rounds=99", "trainer.run_dir=/elsewhere", "learner.world_size=4", "rollout.num_engines=3",
        "sync.timeout_s=9", "logging.wandb_mode=disabled", "infer.tau=0.5"])
    assert resume_changes(base, neutral.model_dump(mode="json")) == []


def test_a_different_dataset_is_refused_with_counts(tmp_path):
    path, manifest = _checkpoint(tmp_path, [])
    cfg = load_config(REPO / "configs/tiny_cpu.yaml")
    fewer = IDS[:7] + [dataclasses.replace(IDS[0], id="new-1")]
    with pytest.raises(ResumeRefused, match=r"10 samples in the checkpoint, 8 now; 3 ids gone .*, 1 new"):
        check_resume(path, manifest, cfg, fewer)
    with pytest.raises(ResumeRefused, match="same ids in a different order"):
        check_resume(path, manifest, cfg, IDS[::-1])
    check_resume(path, manifest, cfg, fewer, allow=["dataset"])
    check_resume(path, manifest, cfg, IDS)


def test_a_misspelt_allowed_key_is_refused(tmp_path):
    path, manifest = _checkpoint(tmp_path, [])
    with pytest.raises(ResumeRefused, match="grpo.kl_coeff is not a config key"):
        check_resume(path, manifest, load_config(REPO / "configs/tiny_cpu.yaml"), IDS, allow=["grpo.kl_coeff"])


def test_a_reannotated_release_with_the_same_ids_is_refused_before_any_actor_starts(tiny_qwen25, tmp_path):
    """Same ids, same order, but answers, a problem type and a video changed: the launcher refuses
    with counts by kind before Ray (or any actor) starts, and accepts the change when named."""
    import ray

    from launch.train import _run
    from rl.data.loaders import load_from_config
    from rl.data.synthetic import encode_mp4, generate_synthetic

    generate_synthetic(tmp_path / "data", 6, seed=0, kinds=("colour",))
    release = tmp_path / "data" / "release.jsonl"
    release.write_text((tmp_path / "data" / "samples.jsonl").read_text())
    overrides = [f"model.path={tiny_qwen25}", f"data.train={release}", f"trainer.run_dir={tmp_path / 'run'}"]
    cfg = load_config(REPO / "configs/tiny_cpu.yaml", overrides)
    _checkpoint(tmp_path / "run", overrides, load_from_config(cfg.data).samples)

    records = [json.loads(line) for line in release.read_text().splitlines()]
    for record in records[:2]:  # re-annotated answers
        record["answer"] = "B" if record["answer"] != "B" else "C"
    records[2]["problem_type"] = "math"
    release.write_text("".join(json.dumps(r) + "\n" for r in records))
    video = tmp_path / "data" / records[3]["media_path"]
    before = os.stat(video)
    video.write_bytes(encode_mp4(np.full((4, 32, 32, 3), 90, dtype=np.uint8), 2))  # re-encoded media
    os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))

    with pytest.raises(ResumeRefused) as err:
        _run(str(REPO / "configs/tiny_cpu.yaml"), overrides, "auto")
    message = str(err.value)
    ids = [r["id"] for r in records]
    assert (f"6 samples in the checkpoint, 6 now; changed in the samples kept: answers 2 (e.g. {', '.join(sorted(ids[:2]))}), "
            f"problem types 1 (e.g. {ids[2]}), media files (size, mtime or clip window) 1 (e.g. {ids[3]})") in message, message
    assert "ids gone" not in message and "media paths" not in message
    assert "--resume-allow-changes dataset" in message
    assert not ray.is_initialized(), "refused before any actor starts"

    path = CheckpointManager(tmp_path / "run").latest()
    samples = load_from_config(cfg.data).samples
    check_resume(path, CheckpointManager.read_manifest(path), cfg, samples, allow=["dataset"])


# The CLI flow (refused by name before any actor starts, then allowed when named) runs at the end of
# tests/test_trainer.py::test_resume_after_ctrl_c_matches_the_straight_run, on that run's checkpoint.
