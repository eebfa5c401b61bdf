"""Fault campaign: the tiny training job on the real stack, one injected fault per run.

Every run trains `--rounds` rounds of the tiny model (real Ray, vLLM-CPU engines, a DeepSpeed
learner world of `--ranks` ranks at ZeRO-`--zero`, reward workers), injects one fault, and must
finish. Prints a JSON table, one row per fault:

    fault, completed (y/n), restarts (engine + reward-worker + builder restarts the run counted),
    samples_lost (must be 0), wall_s, detail

Faults, and how each is injected (the moment is picked by wrapping the trainer's own call, so the
real code path runs; nothing is mocked):

- engine_killed_mid_generation  round 2's generate: engine 0 is frozen (SIGSTOP) as the call goes
                                out and SIGKILLed 1 s later, inside its generate.
- engine_killed_mid_sync        round 1's weight sync: engine 0 frozen, SIGKILLed 3 s later, while
                                the learner is inside the bucket stream (and, under ZeRO-3, gathering).
- engine_frozen_during_sync     round 1's weight sync: engine 0 frozen and left frozen; the sync
                                deadline (`--sync-timeout`) passes and heal replaces it.
- reward_worker_killed_mid_batch round 2's reward batch: a reward worker frozen, SIGKILLed 1 s later.
- builder_killed_mid_round      round 2: the input builder is frozen as round 3's prompts are sent
                                to it (the prefetch), SIGKILLed 1 s later while they wait.
- driver_kill9_mid_checkpoint   `thinkonce train` is SIGKILLed (whole process group) while its
                                second checkpoint is being written (.tmp-step-000002 exists), then
                                resumed from the first.
- sigterm_then_resume           SIGTERM after round 1; the run checkpoints and exits; then resumed.
- corrupt_and_missing_video     one sample's video is overwritten with garbage, another's deleted.
- math_answers_stall_checker    round 2: 5 of the model's answers are replaced by an expression
                                that stalls math-verify (9^{9^{9^{9}}}); each must time out.

A sample is lost when a round the run should have trained is missing, or trained other prompts
than the fault-free stream gives (the stream's order is known exactly: rl.stream.PromptStream,
skipping samples whose media is bad, which the run counts as skipped, not lost).

    .venv/bin/python benchmarks/fault_campaign.py [--only engine_killed_mid_sync ...] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STALL = "9^{9^{9^{9}}}"
FAULTS = (
    "engine_killed_mid_generation", "engine_killed_mid_sync", "engine_frozen_during_sync",
    "reward_worker_killed_mid_batch", "builder_killed_mid_round", "driver_kill9_mid_checkpoint", "sigterm_then_resume",
    "corrupt_and_missing_video", "math_answers_stall_checker",
)


def overrides(args: argparse.Namespace, model_dir: Path, data_dir: Path, run_dir: Path) -> list[str]:
    return [
        f"model.path={model_dir}", f"data.synthetic_dir={data_dir}", f"data.synthetic_num_samples={args.samples}",
        f"trainer.run_dir={run_dir}", f"trainer.total_rounds={args.rounds}", "trainer.save_every=1",
        "trainer.prompts_per_round=2", "trainer.steps_per_round=1", "rollout.n=2", "rollout.max_new_tokens=8",
        f"rollout.num_engines={args.engines}", f"learner.world_size={args.ranks}", f"learner.zero_stage={args.zero}",
        "reward.num_workers=2", "reward.timeout_s=2", f"sync.timeout_s={args.sync_timeout}",
        "logging.progress=false", "logging.wandb_mode=disabled",
    ]


def samples_lost(run_dir: Path, samples: list, bad: set[str], cfg) -> int:
    """Prompts the fault-free stream gives that no completed round trained (rounds missing count whole)."""
    from rl.metrics import read_metrics
    from rl.stream import PromptStream

    done = {m["step"] for m in read_metrics(run_dir)}
    trained: dict[int, list[str]] = {}
    path = run_dir / "samples.jsonl"
    for line in (path.read_text().splitlines() if path.is_file() else []):
        record = json.loads(line)
        trained[record["step"]] = record["ids"]  # a round rerun after a resume: the last record counts
    stream = PromptStream(samples, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
    lost = 0
    for step in range(1, cfg.trainer.total_rounds + 1):
        expected = []
        while len(expected) < cfg.trainer.prompts_per_round:
            expected += [s.id for s in stream.take(1) if s.id not in bad]
        got = trained.get(step, []) if step in done else []
        lost += len(set(expected) - set(got))
    return lost


def _freeze_then_kill(pid: int, after_s: float | None) -> None:
    os.kill(pid, signal.SIGSTOP)
    if after_s is not None:
        threading.Timer(after_s, os.kill, (pid, signal.SIGKILL)).start()


def _wrap_once(obj: Any, name: str, on_call: int, before: Callable[[], None], transform: Callable | None = None) -> None:
    """Run `before` (and pass the arguments through `transform`) on call number `on_call` of obj.name."""
    original = getattr(obj, name)
    calls = {"n": 0}

    def wrapped(*a, **kw):
        calls["n"] += 1
        if calls["n"] == on_call:
            before()
            if transform is not None:
                a = transform(*a)
        return original(*a, **kw)

    setattr(obj, name, wrapped)


def in_process(fault: str, args: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    """Faults injected into a Trainer driven in this process."""
    import ray

    from launch.placement import init_ray
    from launch.trainer import Trainer
    from rl.config import load_config
    from rl.data.loaders import load_from_config
    from rl.data.synthetic import generate_synthetic

    data_dir, run_dir = work / "data", work / "run"
    argv = overrides(args, model_dir, data_dir, run_dir)
    if fault == "corrupt_and_missing_video":  # a plain JSONL dataset: `synthetic` would regenerate what we break
        argv.append(f"data.train={data_dir / 'samples.jsonl'}")
    cfg = load_config(REPO / "configs/tiny_cpu.yaml", argv)
    generate_synthetic(data_dir, cfg.data.synthetic_num_samples, seed=cfg.data.seed)
    bad: set[str] = set()
    if fault == "corrupt_and_missing_video":
        videos = sorted((data_dir / "videos").glob("*.mp4"))
        videos[0].write_bytes(b"\x00garbage" * 100)
        videos[1].unlink()
        bad = {videos[0].stem, videos[1].stem}
    data = load_from_config(cfg.data)
    init_ray(cfg, "cpu")
    trainer = Trainer(cfg, model_dir, data.samples)
    detail = ""
    try:
        engine_pid = lambda: ray.get(trainer.rollout.actors[0].ready.remote())  # noqa: E731
        if fault == "engine_killed_mid_generation":
            _wrap_once(trainer.rollout, "generate", 2, lambda: _freeze_then_kill(engine_pid(), 1.0))
        elif fault == "engine_killed_mid_sync":
            _wrap_once(trainer.learner, "sync_weights", 1, lambda: _freeze_then_kill(engine_pid(), 3.0))
        elif fault == "engine_frozen_during_sync":
            _wrap_once(trainer.learner, "sync_weights", 1, lambda: _freeze_then_kill(engine_pid(), None))
        elif fault == "reward_worker_killed_mid_batch":
            trainer.rewards.wait_ready()
            _wrap_once(trainer.rewards, "score_batch", 2, lambda: _freeze_then_kill(trainer.rewards.worker_pids[0], 1.0))
        elif fault == "builder_killed_mid_round":
            builder = trainer.rounds.pool.workers[0]  # None without a spare CPU: the row then fails, naming it
            builder_pid = ray.get(builder.__ray_call__.remote(lambda worker: os.getpid()))
            _wrap_once(trainer.rounds, "prefetch", 2, lambda: _freeze_then_kill(builder_pid, 1.0))
        elif fault == "math_answers_stall_checker":  # 5 stalling answers from round 2 on (a round scores 4)
            left = {"stalls": 5}
            original = trainer.rewards.score_batch

            def score_batch(items):
                items = list(items)
                if calls.append(1) or len(calls) >= 2:
                    for i in range(min(left["stalls"], len(items))):
                        items[i] = (f"\\boxed{{{STALL}}}<think>Checking the frames.</think>\\boxed{{{STALL}}}", "2", "math")
                    left["stalls"] -= min(left["stalls"], len(items))
                return original(items)

            calls: list[int] = []
            trainer.rewards.score_batch = score_batch
        start = time.monotonic()
        history = trainer.run("none")
        wall = time.monotonic() - start
        last = history[-1]
        restarts = last["counters/engine_restarts"] + trainer.rewards.restarts + last["counters/builder_restarts"]
        if fault == "builder_killed_mid_round":
            detail = f"builder restarts counted: {int(last['counters/builder_restarts'])}"
        if fault == "math_answers_stall_checker":
            detail = f"reward timeouts counted: {int(last['counters/reward_timeouts'])}"
        if fault == "corrupt_and_missing_video":
            detail = f"skipped at load: {data.report.total}, skipped at render: {int(last['counters/skipped_samples'])}"
        completed = len(history) == cfg.trainer.total_rounds
        return {"completed": "y" if completed else "n", "restarts": int(restarts),
                "samples_lost": samples_lost(run_dir, data.samples, bad, cfg), "wall_s": round(wall, 1), "detail": detail}
    finally:
        trainer.shutdown()
        ray.shutdown()


def by_cli(fault: str, args: argparse.Namespace, model_dir: Path, work: Path) -> dict:
    """Faults on the driver process itself: `thinkonce train` killed or stopped, then resumed."""
    from rl.config import load_config
    from rl.data.synthetic import generate_synthetic
    from rl.metrics import read_metrics

    data_dir, run_dir = work / "data", work / "run"
    argv = overrides(args, model_dir, data_dir, run_dir)
    cfg = load_config(REPO / "configs/tiny_cpu.yaml", argv)
    samples = generate_synthetic(data_dir, cfg.data.synthetic_num_samples, seed=cfg.data.seed)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    binary = Path(sys.executable).parent / "thinkonce"

    def launch(resume: str) -> subprocess.Popen:
        return subprocess.Popen([str(binary), "train", "--config", "configs/tiny_cpu.yaml", "--resume", resume, *argv],
                                cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    start = time.monotonic()
    proc = launch("none")
    deadline = time.monotonic() + 1800
    if fault == "driver_kill9_mid_checkpoint":
        ckpts = run_dir / "checkpoints"  # the second checkpoint's write: the first is complete, so the resume uses it
        while not (ckpts.is_dir() and any(ckpts.glob(".tmp-step-000002"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                return {"completed": "n", "restarts": 0, "samples_lost": -1, "wall_s": 0, "detail": "no checkpoint seen"}
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        detail = f"killed while writing {next(ckpts.glob('.tmp-step-*')).name}"
    else:
        while not read_metrics(run_dir):
            if proc.poll() is not None or time.monotonic() > deadline:
                return {"completed": "n", "restarts": 0, "samples_lost": -1, "wall_s": 0, "detail": "no round finished"}
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=600)
        detail = f"SIGTERM: exit {proc.returncode} after round {len(read_metrics(run_dir))}"
    subprocess.run(["ray", "stop", "--force"], capture_output=True, env={**env, "PATH": f"{binary.parent}:{env['PATH']}"})
    resumed = launch("auto")
    out, _ = resumed.communicate(timeout=1800)
    wall = time.monotonic() - start
    steps = sorted({m["step"] for m in read_metrics(run_dir)})
    completed = resumed.returncode == 0 and "resumed from" in out and steps == list(range(1, cfg.trainer.total_rounds + 1))
    counters = read_metrics(run_dir)[-1] if steps else {}
    return {"completed": "y" if completed else "n", "restarts": int(counters.get("counters/engine_restarts", 0)),
            "samples_lost": samples_lost(run_dir, samples, set(), cfg), "wall_s": round(wall, 1),
            "detail": detail if completed else detail + " | " + out[-1500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--zero", type=int, default=3, choices=[0, 1, 2, 3])
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--sync-timeout", type=float, default=30.0)
    args = parser.parse_args()

    from rl.runtime import configure_environment
    from rl.tiny import build_tiny

    configure_environment("cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny("qwen2_5_vl", Path(tmp) / "tiny")
        for fault in args.only:
            work = Path(tmp) / fault
            work.mkdir()
            runner = by_cli if fault in ("driver_kill9_mid_checkpoint", "sigterm_then_resume") else in_process
            try:
                row = runner(fault, args, model_dir, work)
            except Exception as exc:  # a fault the run did not survive is a row, not the end of the campaign
                row = {"completed": "n", "restarts": 0, "samples_lost": -1, "wall_s": 0, "detail": f"{type(exc).__name__}: {exc}"[:1500]}
            rows.append({"fault": fault, **row})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "fault campaign (tiny model, CPU)", "rounds": args.rounds, "learner_ranks": args.ranks,
                      "zero_stage": args.zero, "engines": args.engines, "table": rows}))


if __name__ == "__main__":
    main()
