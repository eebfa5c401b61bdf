"""Resume refuses to continue a run silently changed: a config key that alters the math or the data
order, or a different dataset; `--resume-allow-changes` accepts named changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl.checkpoint import CheckpointManager, Manifest, ResumeRefused, check_resume, dataset_fingerprint, write_dataset_ids
from rl.config import load_config, resume_changes

REPO = Path(__file__).resolve().parent.parent
IDS = [f"s{i}" for i in range(10)]


def _checkpoint(tmp_path: Path, overrides: list[str], ids: list[str] = IDS) -> tuple[Path, Manifest]:
    cfg = load_config(REPO / "configs/tiny_cpu.yaml", overrides)
    manifest = Manifest(step=2, samples_consumed=4, config=cfg.model_dump(mode="json"),
                        dataset=dataset_fingerprint(ids, cfg.trainer.seed, cfg.data.shuffle))
    path = CheckpointManager(tmp_path).save(manifest, lambda tmp: write_dataset_ids(tmp, ids))
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
    fewer = IDS[:7] + ["new-1"]
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


# The CLI flow (refused by name before any actor starts, then allowed when named) runs at the end of
# tests/test_trainer.py::test_resume_after_kill_9_matches_the_straight_run, on that run's checkpoint.
