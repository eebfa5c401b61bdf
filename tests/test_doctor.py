"""`thinkonce doctor` on the real stack: one injected failure per kind gives `fail` with its fix line
before any actor starts (or, for memory, before the timed rounds) and a nonzero exit; a healthy
config passes every check (docs/doctor.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launch.doctor import CHECKS, doctor
from rl.data.synthetic import generate_synthetic

ROOT = Path(__file__).resolve().parent.parent


def _small(tiny: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The tiny default at test size: 8 samples, 4 answers of 16 tokens, two prompts a round."""
    return [f"model.path={tiny}", f"data.synthetic_dir={tmp_path / 'syn'}", "data.synthetic_num_samples=8",
            f"trainer.run_dir={tmp_path / 'run'}", "trainer.prompts_per_round=2", "trainer.steps_per_round=1",
            "trainer.total_rounds=20", "rollout.n=4", "rollout.max_new_tokens=16", "logging.progress=false",
            "logging.wandb_mode=disabled", *extra]


def _doctor(tiny: Path, tmp_path: Path, capsys, *extra: str) -> dict:
    """`thinkonce doctor --json` in this process: its exit code and report."""
    code = doctor(str(ROOT / "configs/tiny_cpu.yaml"), _small(tiny, tmp_path, *extra), as_json=True)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report["exit"] = code
    return report


def _failed(report: dict, name: str, fix: str) -> None:
    """`name` failed with a fix naming `fix`, the exit code is 1, and nothing after it ran."""
    rows = {r["name"]: r for r in report["checks"]}
    table = json.dumps(report["checks"], indent=1)
    assert report["exit"] == 1 and not report["ok"], table
    assert [r["name"] for r in report["checks"]] == list(CHECKS), table
    assert rows[name]["status"] == "fail" and fix in rows[name]["fix"], table
    after = list(CHECKS)[list(CHECKS).index(name) + 1:]
    assert all(rows[n]["status"] == "skip" for n in after), table
    assert all(r["status"] in ("pass", "warn") for r in report["checks"][: list(CHECKS).index(name)]), table


def _read_only_dir(path: Path) -> Path:
    """A directory no one can write: mode 0555, and for root (who ignores mode bits) a read-only bind mount."""
    path.mkdir()
    path.chmod(0o555)
    try:
        (path / "probe").touch()
    except OSError:
        return path
    (path / "probe").unlink()
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(path), str(path)], capture_output=True).returncode == 0:
            return path
        subprocess.run(["umount", str(path)], capture_output=True)
    return Path("/proc/thinkonce-run")  # root without mount rights: a place no process can create a directory in


def test_each_injected_failure_fails_its_check_before_any_actor(tiny_qwen25, tmp_path, capsys):
    # The cluster cannot hold the placement (learner ranks ask for a resource no node has).
    report = _doctor(tiny_qwen25, tmp_path / "a", capsys, 'cluster.learner_resources={"node_a": 1}')
    _failed(report, "cluster", "learner.world_size")
    assert "node_a: 0 < 1" in report["checks"][0]["figure"]

    # A model directory without its weights.
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_qwen25, broken)
    (broken / "model.safetensors").unlink()
    _failed(_doctor(broken, tmp_path / "b", capsys), "model", "model.path")

    # A checkpoint directory that cannot be written.
    ro = _read_only_dir(tmp_path / "ro")
    try:
        report = _doctor(tiny_qwen25, tmp_path / "c", capsys, f"trainer.run_dir={ro}")
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    _failed(report, "checkpoints", "trainer.run_dir")

    # A data file where most records' videos are gone (as with a wrong data.media_root).
    syn = tmp_path / "d" / "syn"
    samples = generate_synthetic(syn, 8, seed=0)
    for s in samples[:6]:
        Path(s.media_path).unlink()
    report = _doctor(tiny_qwen25, tmp_path / "d", capsys, f"data.train={syn / 'samples.jsonl'}")
    _failed(report, "data", "data.media_root")
    assert "2 usable, 6 skipped of 8 records" in report["checks"][3]["figure"]
    assert report["figures"]["data"]["skipped_by_reason"], report["figures"]["data"]


@pytest.mark.slow
def test_healthy_config_passes_and_a_memory_cap_fails_before_the_timed_rounds(tiny_qwen25, tmp_path):
    """The CLI end to end: the table in JSON, exit 0, every check run; then the same config under a
    memory cap below the learner's peak: `memory` fails with its fix, the projection does not run, exit 1."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "launch.cli", "doctor", "--json", *_small(tiny_qwen25, tmp_path)]
    ok = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-4000:]
    report = json.loads(ok.stdout.strip().splitlines()[-1])
    assert report["ok"] and [c["name"] for c in report["checks"]] == list(CHECKS)
    assert all(c["status"] in ("pass", "warn") for c in report["checks"]), report["checks"]
    figures = report["figures"]
    assert figures["sync"]["tensors"] > 0 and figures["sync"]["seconds"] > 0
    assert figures["agreement"]["mean_abs"] < figures["agreement"]["bound"]
    projection = figures["projection"]
    assert projection["seconds_per_round"] > 0 and projection["rounds"] == 20 and projection["bound_by"]
    assert not list((tmp_path / "run").glob(".doctor-*")), "the scratch run directory is removed"

    capped = subprocess.run([*cmd, "--memory-cap-gib", "0.25"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert capped.returncode == 1, capped.stderr[-4000:]
    report = json.loads(capped.stdout.strip().splitlines()[-1])
    rows = {c["name"]: c for c in report["checks"]}
    assert rows["memory"]["status"] == "fail" and "learner.micro_batch_tokens" in rows["memory"]["fix"], rows["memory"]
    assert rows["agreement"]["status"] == rows["projection"]["status"] == "skip"
