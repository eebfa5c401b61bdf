"""Resume refuses to continue a run silently changed: a config key that alters the math or the data
order, or a different dataset; `--resume-allow-changes` accepts named changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rl.checkpoint import CheckpointManager, Manifest, ResumeRefused, check_resume, dataset_fingerprint, write_dataset_ids
from rl.config import load_config, resume_changes
from rl.metrics import read_metrics

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
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


@pytest.mark.slow
def test_cli_resume_with_changed_kl_coef_refuses_then_proceeds_when_allowed(tiny_qwen25, tmp_path):
    run = tmp_path / "run"
    args = [f"model.path={tiny_qwen25}", f"data.synthetic_dir={tmp_path / 'syn'}", "data.synthetic_num_samples=4",
            f"trainer.run_dir={run}", "trainer.save_every=1", "trainer.prompts_per_round=2", "trainer.steps_per_round=1",
            "rollout.n=2", "rollout.max_new_tokens=8", "logging.progress=false", "logging.wandb_mode=disabled"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)

    def train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "thinkonce"), "train", "--config", "configs/tiny_cpu.yaml", *extra, *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=900)

    first = train("--resume", "none", "trainer.total_rounds=1", "grpo.kl_coef=0.01")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    saved_config = (run / "config.yaml").read_text()

    refused = train("--resume", "auto", "trainer.total_rounds=2", "grpo.kl_coef=0.05")
    out = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "grpo.kl_coef: 0.01 in the checkpoint, 0.05 now" in out, out[-3000:]
    assert "Traceback" not in out and "Started a local Ray instance" not in out, "refused before any actor starts"
    assert [m["step"] for m in read_metrics(run)] == [1], "nothing was trained"
    assert (run / "config.yaml").read_text() == saved_config, "the run's config.yaml is not overwritten by a refused resume"

    allowed = train("--resume", "auto", "--resume-allow-changes", "grpo.kl_coef", "trainer.total_rounds=2", "grpo.kl_coef=0.05")
    assert allowed.returncode == 0, allowed.stdout[-3000:] + allowed.stderr[-3000:]
    assert "resumed from" in allowed.stdout + allowed.stderr
    assert [m["step"] for m in read_metrics(run)] == [1, 2]
    assert "kl_coef: 0.05" in (run / "config.yaml").read_text()
    kept = [p for p in run.glob("config.*.yaml")]
    assert len(kept) == 1 and kept[0].read_text() == saved_config, "the previous config is kept under a new name"
    manifest = json.loads((run / "checkpoints" / "step-000002" / "manifest.json").read_text())
    assert manifest["dataset"]["samples"] == 4 and manifest["config"]["grpo"]["kl_coef"] == 0.05
