"""The training job end to end on the real stack: docs/cluster.md's commands word for word (`ray start`,
`ray job submit`, `ray job logs`, `ray job stop` (SIGTERM), a resubmission that resumes) with Ray's
token authentication on, Ctrl-C's one line, resume equivalence at an epoch boundary, the resume guard
(engine and learner death: tests/test_sync_recovery.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl.metrics import read_metrics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _overrides(model_dir: Path, synthetic: Path, run_dir: Path, rounds: int) -> list[str]:
    """A small, fast, fully deterministic run: fp32 CPU, fixed seeds, one epoch (4 samples) per 2
    rounds, a checkpoint every 2 rounds (at each epoch boundary)."""
    return [
        f"model.path={model_dir}", f"data.synthetic_dir={synthetic}", "data.synthetic_num_samples=4",
        f"trainer.run_dir={run_dir}", f"trainer.total_rounds={rounds}", "trainer.save_every=2",
        "trainer.prompts_per_round=2", "trainer.steps_per_round=2", "rollout.n=4", "rollout.max_new_tokens=16",
        "logging.progress=false", "logging.wandb_mode=disabled",
    ]


def _train(args: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([str(BIN / "thinkonce"), "train", "--config", "configs/tiny_cpu.yaml", *args],
                            cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _samples(run_dir: Path) -> list[list[str]]:
    by_step = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        by_step[rec["step"]] = rec["ids"]
    return [by_step[k] for k in sorted(by_step)]


def _ray(*args: str, **kwargs) -> subprocess.CompletedProcess:
    # As docs/cluster.md says: RAY_AUTH_MODE=token on every `ray` command, so the head and the `ray
    # job` client agree on the token in ~/.ray/auth_token (which any local Ray run writes).
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, **kwargs)


def test_resume_after_ctrl_c_matches_the_straight_run(tiny_qwen25, tmp_path):
    """The straight run is a cluster user's, after a local run has left its Ray token in ~/.ray:
    docs/cluster.md's commands on a real local head, stopped with `ray job stop` (SIGTERM: a checkpoint
    of the rounds trained, the documented log line, a log without a traceback although wandb's
    service process gets the signal too). A driver that asks for more CPUs than the head has fails in
    one line before it looks at the model. The local run is started with `--resume auto` on an empty
    run_dir (it says it starts a new run), stopped with Ctrl-C after its epoch-boundary checkpoint (one
    line: the checkpoint kept and the command that continues), and resumed through the documented
    resubmission (`ray job submit ... --resume auto`): the same samples in the same order and losses
    within 1e-4 of the straight run; every sample once per epoch, none twice, no round repeated. The
    resume also checks the guard on the CLI (a changed math key is refused, and allowed when named).
    (A driver killed with kill -9 and resumed: tests/test_offpolicy.py.)"""
    synthetic = tmp_path / "synthetic"
    straight, killed = tmp_path / "straight", tmp_path / "killed"

    # A local run first (Ray's own token authentication on by default, as for a user after the demo).
    proc = _train(["--resume", "auto", *_overrides(tiny_qwen25, synthetic, killed, 50)])
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "step-000002" / "manifest.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal goes to the whole process group
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in out and "KeyboardInterrupt" not in out, out[-4000:]
    assert f"--resume auto: no complete checkpoint in {killed}; starting a new run from round 0" in out
    assert out.strip().splitlines()[-1] == (
        f"thinkonce: interrupted; kept checkpoint {killed / 'checkpoints' / 'step-000002'} (round 2); continue with: "
        f"thinkonce train --config {killed / 'config.yaml'} --resume auto"), out[-3000:]
    assert len(read_metrics(killed)) < 4, "interrupted before round 4"
    assert (Path.home() / ".ray" / "auth_token").is_file(), "a local Ray run leaves its token"

    # Resuming with a changed math key is refused by name before any actor starts.
    saved_config = (killed / "config.yaml").read_text()
    resume = _overrides(tiny_qwen25, synthetic, killed, 4)
    refused = _train(["--resume", "auto", *resume, "grpo.kl_coef=0.05"])
    out, _ = refused.communicate(timeout=300)
    assert refused.returncode == 2 and "grpo.kl_coef: 0.01 in the checkpoint, 0.05 now" in out, out[-3000:]
    assert "Traceback" not in out and "Started a local Ray instance" not in out, "refused before any actor starts"
    assert (killed / "config.yaml").read_text() == saved_config, "a refused resume does not overwrite config.yaml"

    address = "http://127.0.0.1:8275"
    _ray("get-auth-token", "--generate", check=True, timeout=60)
    _ray("start", "--head", "--node-ip-address=127.0.0.1", "--port=6390", "--num-cpus=6", "--dashboard-host=127.0.0.1",
         "--dashboard-port=8275", "--include-dashboard=true", check=True, timeout=120)
    try:
        # Too few CPUs: one line, exit 2, before the model (a missing directory here) is looked at.
        short = subprocess.run([str(BIN / "thinkonce"), "train", *_overrides(tiny_qwen25, synthetic, tmp_path / "short", 4),
                                "model.path=/nonexistent/model", "rollout.num_engines=8"], cwd=REPO, capture_output=True,
                               text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "token",
                                                            "RAY_ADDRESS": "127.0.0.1:6390"})
        assert short.returncode == 2, short.stderr[-3000:]
        assert short.stderr.strip().splitlines()[-1].startswith(
            "thinkonce: error: the Ray cluster has 6 CPU but the config needs 10: one per actor: rollout.num_engines (8)"), \
            short.stderr[-3000:]
        assert "Traceback" not in short.stderr and "/nonexistent/model" not in short.stderr
        # Asked for 50 rounds and stopped after its 4th (the schedule is constant, so the round count
        # does not change rounds 1-4). Ray's default grace after its SIGTERM is 3 s; the job raises it
        # so the run can finish its round and checkpoint (docs/cluster.md).
        # wandb and the progress report on, as for a user (offline wandb: no key here).
        runtime_env = json.dumps({"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "300"}})
        user = ["logging.progress=true", "logging.wandb_mode=auto"]
        job = ["--address", address, "--working-dir", str(REPO), "--runtime-env-json", runtime_env, "--", "thinkonce",
               "train", "--config", "configs/tiny_cpu.yaml"]
        submit = ["job", "submit", "--submission-id", "straight", "--no-wait", *job, "--resume", "none",
                  *_overrides(tiny_qwen25, synthetic, straight, 50), *user]
        for _ in range(30):  # the head's job agent may still be starting on a loaded box ("No available agent")
            submitted = _ray(*submit, timeout=300)
            if submitted.returncode == 0 or "No available agent" not in submitted.stderr:
                break
            time.sleep(2)
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        deadline, next_check = time.time() + 600, time.time() + 10
        while len(read_metrics(straight)) < 4:
            if time.time() > next_check:  # a job that failed early ends the wait
                status = _ray("job", "status", "--address", address, "straight", timeout=60).stdout
                assert "RUNNING" in status or "PENDING" in status, (status, _ray("job", "logs", "--address", address, "straight").stdout[-4000:])
                next_check = time.time() + 10
            assert time.time() < deadline, "the job did not reach its 4th round"
            time.sleep(0.2)
        _ray("job", "stop", "--address", address, "straight", check=True, timeout=600)
        logs = _ray("job", "logs", "--address", address, "straight", timeout=60).stdout
        status = _ray("job", "status", "--address", address, "straight", timeout=60).stdout
        done = len(read_metrics(straight))
        # The documented resubmission continues the interrupted local run (with --resume auto) after its
        # round 2; a changed key named in --resume-allow-changes is accepted. The one changed here, the
        # math checker's time limit, only acts on an answer that stalls it (none does here), so rounds
        # 3-4 must still match the straight run.
        resubmitted = _ray("job", "submit", "--submission-id", "resumed", *job, "--resume", "auto",
                           "--resume-allow-changes", "reward.timeout_s", *resume, "reward.timeout_s=7.5", *user, timeout=600)
    finally:
        _ray("stop", "--force", timeout=120)
    assert "was stopped" in status, (status, logs[-4000:])
    assert f"SIGTERM: checkpoint written at round {done}; resume with --resume auto" in logs, logs[-4000:]
    assert "Started a local Ray instance" not in logs, "the job joined the head, it did not start its own Ray"
    assert "Traceback" not in logs and logs.count("ConnectionResetError") <= 1, logs[-4000:]  # wandb's one line
    assert re.search(r"^GRPO rounds: 1/50 rounds, \d+ s, ETA \d+ s, reward", logs, re.M), \
        "off a terminal, the progress report is a line per round (not tqdm's redraws)"
    assert 4 <= done < 50 and [m["step"] for m in read_metrics(straight)] == list(range(1, done + 1))
    manifest = json.loads((straight / "checkpoints" / f"step-{done:06d}" / "manifest.json").read_text())
    assert manifest["step"] == done and manifest["samples_consumed"] == 2 * done
    assert manifest["dataset"]["samples"] == 4
    assert resubmitted.returncode == 0 and "round 2, 4 samples consumed" in resubmitted.stdout, \
        resubmitted.stdout[-4000:] + resubmitted.stderr[-2000:]
    assert "Traceback" not in resubmitted.stdout, resubmitted.stdout[-4000:]
    assert "timeout_s: 7.5" in (killed / "config.yaml").read_text()
    kept = list(killed.glob("config.*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == saved_config, "the previous config is kept under a new name"

    rounds = _samples(killed)
    assert rounds == _samples(straight)[:4]
    first_epoch, second_epoch = rounds[0] + rounds[1], rounds[2] + rounds[3]
    assert sorted(first_epoch) == sorted(second_epoch) and len(set(first_epoch)) == 4
    a, b = read_metrics(straight)[:4], read_metrics(killed)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3, 4]
    for ma, mb in zip(a, b):
        assert abs(ma["train/loss"] - mb["train/loss"]) < 1e-4, (ma["step"], ma["train/loss"], mb["train/loss"])
        assert ma["reward/total"] == pytest.approx(mb["reward/total"], abs=1e-9)
