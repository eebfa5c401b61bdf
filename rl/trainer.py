"""The GRPO loop of VideoAuto-R1, as a single controller over three actor groups.

One round (method.md section 4):

    prompts   <- P prompts from the shuffled stream                     (data)
    o_{i,1..G} ~ pi_theta_old(. | q_i), G = 16                          (rollout, vLLM engines)
    r_{i,j}   = 0.9 R(a1) + 1.1 R(a2) + R_fmt + 0.3 R_fallback          (reward pool)
    A_{i,j}   = (r_{i,j} - mean_j r_{i,.}) / (std_j r_{i,.} + 1e-4)     (rl.grpo)
    theta     <- K AdamW steps on the clipped surrogate + beta k3 KL    (learner group; old and
                 ref log-probs are recomputed by the learner first)
    engines   <- theta                                                  (bucketed weight sync)
    checkpoint every N rounds and on SIGTERM; metrics every round

Fault handling lives here because only the controller sees the whole round: a dead engine is
replaced by the rollout group and re-synced before its work is retried; a non-finite loss is skipped
by the learner and counted here; a dead learner rank ends the run with a message that says how to
resume; reward timeouts are counted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from learner.group import LearnerGroup
from reward.pool import RewardPool
from launch.placement import required
from rl.builders import BuilderPool, RoundBuilder
from rl.checkpoint import (CheckpointManager, Manifest, capture_rng, check_resume, dataset_fingerprint, restore_rng,
                           write_dataset_samples)
from rl.config import Config, to_yaml
from rl.grpo import group_advantages
from rl.inputs import InputBuilder
from rl.metrics import MetricsLogger, PhaseTimer, rollout_metrics
from rl.runtime import resolve_device
from rl.stream import PromptStream
from rl.types import Generation, ModelInput, RewardBreakdown, Sample
from rollout.group import RolloutGroup
from rollout.sampling import SamplingSettings

log = logging.getLogger("thinkonce.trainer")


@dataclass
class RolloutJob:
    """One round's generation and scoring, run in the background (rl.trainer.Trainer._launch)."""

    step: int
    prompts: list[ModelInput]
    version: int
    """The policy version of the engines that generate it."""
    position: int
    """Stream position after its samples (what a checkpoint after this round records)."""
    seed: int
    future: Optional[Future] = None
    generated: threading.Event = field(default_factory=threading.Event)
    gen_start: float = 0.0
    gen_end: float = 0.0
    generations: list[list[Generation]] = field(default_factory=list)
    rewards: list[RewardBreakdown] = field(default_factory=list)

    def result(self) -> tuple[list[list[Generation]], list[RewardBreakdown]]:
        """Generations and rewards; re-raises what failed in the background."""
        self.future.result()
        return self.generations, self.rewards


class LearnerDied(RuntimeError):
    """A learner rank is gone: the DeepSpeed world cannot continue; the run must be resumed."""


class Trainer:
    """Owns the actor groups of one run and drives the rounds."""

    def __init__(self, cfg: Config, model_dir: Path, samples: list[Sample], resume_allow_changes: Sequence[str] = ()) -> None:
        """`resume_allow_changes`: config keys (and `dataset`) a resume may change; see rl.checkpoint.check_resume."""
        self.cfg = cfg
        self.model_dir = model_dir
        self.resume_allow_changes = tuple(resume_allow_changes)
        self.run_dir = Path(cfg.trainer.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stream: PromptStream[Sample] = PromptStream(samples, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
        self.ckpt = CheckpointManager(self.run_dir, cfg.trainer.keep_last)
        self.counters: dict[str, float] = {"skipped_samples": 0, "nonfinite_updates": 0, "engine_restarts": 0,
                                           "reward_timeouts": 0, "builder_restarts": 0}
        startup = PhaseTimer()
        with startup.phase("learner ranks"):
            # Groups start in the order that claims resources: the learner ranks' placement group,
            # the engines, and, once those are placed, reward workers and builders (they take what
            # is left, on any node). The engines load while the learner ranks do; reward workers
            # and builders while the engines finish.
            self.learner = LearnerGroup.from_config(cfg, str(model_dir), wait=False)
            self.rollout = RolloutGroup.from_config(cfg, str(model_dir), wait=False)
            self.learner.wait_ready()
        with startup.phase("engines still loading after that"):
            self.rewards = RewardPool.from_config(cfg.reward)
            self.rounds = self._round_builder()
            self.rollout.wait_ready()
        with startup.phase("builders"):
            self.rounds.wait_ready()
        with startup.phase("weight-sync group"):
            self.learner.connect(self.rollout)
        log.info("actors up in %.1f s: %s", sum(startup.seconds.values()),
                 ", ".join(f"{name} {s:.1f}" for name, s in startup.seconds.items()))
        self.rollout.weights_dir = self._current_policy_dir
        self.sampling = SamplingSettings.from_config(cfg.rollout)
        self._restarts_seen = 0
        self._stop_requested = False
        self.version = 0
        """Policy version: rounds trained. The engines hold it after each sync."""
        self._trained_position = self.rounds.position
        """Stream position after the last trained round (a round in flight is not in a checkpoint)."""
        self._inflight: Optional[RolloutJob] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout")
        self._t0 = time.perf_counter()

    @property
    def total_rounds(self) -> int:
        if self.cfg.trainer.total_rounds is not None:
            return self.cfg.trainer.total_rounds
        return max(1, self.cfg.trainer.epochs * len(self.stream.items) // self.cfg.trainer.prompts_per_round)

    def run(self, resume: str = "auto") -> list[dict[str, float]]:
        """Train to `total_rounds`, resuming per `resume` (auto | none | checkpoint path)."""
        start = self._resume(resume)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        logger = MetricsLogger(self.run_dir, self.total_rounds, start, self.cfg.model_dump(mode="json"),
                               self.cfg.logging.wandb_project, self.cfg.logging.wandb_mode, self.cfg.logging.progress)
        history = []
        try:
            for step in range(start, self.total_rounds):
                metrics = self.train_round(step)
                if (step + 1) % self.cfg.trainer.save_every == 0 or step + 1 == self.total_rounds or self._stop_requested:
                    started = time.perf_counter()
                    self.save(step + 1)
                    metrics["time/checkpoint"] = time.perf_counter() - started
                logger.log(step + 1, metrics)
                history.append(metrics)
                if self._stop_requested:
                    log.warning("SIGTERM: checkpoint written at round %d; resume with --resume auto", step + 1)
                    break
        except LearnerDied as exc:
            latest = self.ckpt.latest()
            raise LearnerDied(f"{exc}\nThe learner world cannot continue without it. Resume from the last complete "
                              f"checkpoint ({latest or 'none yet'}) with: thinkonce train --config "
                              f"{self.run_dir / 'config.yaml'} --resume auto") from None
        finally:
            self._drop_inflight()
            signal.signal(signal.SIGTERM, previous)
            logger.close()
        return history

    def _drop_inflight(self) -> None:
        """Let a round still generating finish and discard it: its samples are re-taken after a resume."""
        if self._inflight is not None:
            try:
                self._inflight.future.result()
            except Exception as exc:
                log.warning("the round in flight failed while the run stopped: %s", exc)
            self._inflight = None

    def train_round(self, step: int) -> dict[str, float]:
        """One GRPO round; returns its metrics.

        With trainer.off_policy_steps = 1, round step+1 is generated (by the engines, still at
        policy version step - 1) while the learner trains on this round; the sync of the new
        version waits for that generation, which the next round needs first anyway.
        """
        wall_start = time.perf_counter()
        timer = PhaseTimer()
        cfg = self.cfg
        G = cfg.rollout.n
        overlapped = cfg.trainer.off_policy_steps == 1
        with timer.phase("data"):
            job = self._inflight or self._launch(step)
            self._inflight = None
        with timer.phase("rollout"):
            job.generated.wait()
        with timer.phase("reward"):
            generations, rewards = job.result()
        if self.rollout.restarts > self._restarts_seen:
            log.warning("round %d: %d rollout engine restart(s); the replacement started from the current "
                        "policy and joins a re-formed weight-sync group", step + 1, self.rollout.restarts - self._restarts_seen)
            self.counters["engine_restarts"] += self.rollout.restarts - self._restarts_seen
            self._restarts_seen = self.rollout.restarts
            self.learner.connect(self.rollout)
        if overlapped and step + 1 < self.total_rounds and not self._stop_requested:
            with timer.phase("data"):
                self._inflight = self._launch(step + 1)  # generated while this round trains
        self.rounds.prefetch(cfg.trainer.prompts_per_round, cfg.data.prefetch_rounds)  # built while this round trains
        prompts = job.prompts
        samples = [p.sample for p in prompts for _ in range(G)]
        flat = [g for group in generations for g in group]
        self.counters["reward_timeouts"] += sum(r.timed_out for r in rewards)
        adv = group_advantages(torch.tensor([r.total for r in rewards], dtype=torch.float32), G, cfg.grpo.eps)
        learner_start = time.perf_counter()
        try:
            stats = self.learner.train_round(prompts, generations, adv.advantages.tolist(), seed=job.seed,
                                             versions=(job.version, self.version))
        except Exception as exc:
            if _is_actor_death(exc):
                raise LearnerDied(f"round {step + 1}: a learner rank died: {exc}") from None
            raise
        learner_end = time.perf_counter()
        lag = self.version - job.version
        self.version += 1
        self._trained_position = job.position
        for name in ("logprobs", "update"):
            timer.seconds[name] += stats.pop(f"time/{name}", 0.0)
        stats["time/learner_dispatch"] = learner_end - learner_start - timer.seconds["logprobs"] - timer.seconds["update"]
        if stats.get("train/skipped_nonfinite", 0.0) > 0:
            self.counters["nonfinite_updates"] += stats["train/skipped_nonfinite"]
            log.warning("round %d: non-finite loss in %d update(s); those updates were skipped",
                        step + 1, int(stats["train/skipped_nonfinite"]))
        if self._inflight is not None:
            with timer.phase("sync_wait"):  # the engines take the new weights between rounds' requests
                self._inflight.generated.wait()
        with timer.phase("sync"):
            stats.update(self._sync())
        metrics = {**rollout_metrics(samples, flat, rewards), **stats, **timer.as_metrics()}
        metrics["grpo/zero_variance_groups"] = adv.zero_variance_fraction
        tokens = sum(len(g.token_ids) for g in flat)
        metrics["throughput/rollout_tokens_per_s"] = tokens / max(job.gen_end - job.gen_start, 1e-9)
        metrics["time/phases"] = sum(timer.seconds.values())
        metrics["time/round"] = time.perf_counter() - wall_start
        metrics["time/overhead"] = metrics["time/round"] - metrics["time/phases"]
        metrics.update(self._overlap_metrics(job, learner_start, learner_end, wall_start, lag))
        metrics["data/samples_consumed"] = float(self._trained_position)
        self.counters["builder_restarts"] = float(self.rounds.restarts)
        metrics.update({f"counters/{k}": float(v) for k, v in self.counters.items()})
        return metrics

    def _launch(self, step: int) -> RolloutJob:
        """Take round `step`'s prompts and start generating and scoring them in the background."""
        prompts = self.rounds.next_round(self.cfg.trainer.prompts_per_round)
        job = RolloutJob(step=step, prompts=prompts, version=self.version, position=self.rounds.position,
                         seed=self.cfg.trainer.seed * 1_000_003 + step)  # sampling seeds and the shuffled mini-batch order
        with open(self.run_dir / "samples.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step + 1, "policy_version": job.version, "ids": [p.sample.id for p in prompts]}) + "\n")
        job.future = self._executor.submit(self._generate_and_score, job)
        return job

    def _generate_and_score(self, job: RolloutJob) -> None:
        """Generation, then rewards as soon as the round is generated (off the critical path when overlapped)."""
        try:
            job.gen_start = time.perf_counter()
            job.generations = self.rollout.generate(job.prompts, dataclasses.replace(self.sampling, seed=job.seed))
            job.gen_end = time.perf_counter()
        finally:
            job.generated.set()
        items = [(g.text, p.sample.answer, p.sample.problem_type) for p, group in zip(job.prompts, job.generations) for g in group]
        job.rewards = self.rewards.score_batch(items)

    def _overlap_metrics(self, job: RolloutJob, learner_start: float, learner_end: float, round_start: float, lag: int) -> dict[str, float]:
        """The round's timeline (seconds since the trainer started), busy fractions and overlap."""
        now = time.perf_counter()
        wall = max(now - round_start, 1e-9)
        gens = [(j.gen_start, j.gen_end if j.generated.is_set() else now) for j in (job, self._inflight) if j is not None and j.gen_start]
        busy = sum(max(0.0, min(b, now) - max(a, round_start)) for a, b in gens)
        nxt = self._inflight
        overlap = 0.0
        if nxt is not None and nxt.gen_start:
            overlap = max(0.0, min(nxt.gen_end if nxt.generated.is_set() else now, learner_end) - max(nxt.gen_start, learner_start))
        t0 = self._t0
        return {
            "offpolicy/lag": float(lag),
            "offpolicy/policy_version": float(job.version),
            "timeline/gen_start": job.gen_start - t0,
            "timeline/gen_end": job.gen_end - t0,
            "timeline/learner_start": learner_start - t0,
            "timeline/learner_end": learner_end - t0,
            "timeline/next_gen_start": (nxt.gen_start - t0) if nxt is not None and nxt.gen_start else -1.0,
            "busy/engines": busy / wall,
            "busy/learner": (learner_end - learner_start) / wall,
            "time/overlap": overlap,
        }

    def save(self, step: int) -> Path:
        """An atomic checkpoint: learner state + HF policy export + the manifest."""
        manifest = Manifest(step=step, samples_consumed=self._trained_position,
                            config=self.cfg.model_dump(mode="json"), rng=capture_rng(), counters=dict(self.counters),
                            dataset=dataset_fingerprint(self.stream.items, self.stream.seed, self.stream.shuffle))
        return self.ckpt.save(manifest, self._write_state)

    def _write_state(self, tmp: Path) -> None:
        self.learner.save_checkpoint(str(tmp / "learner"))
        self.learner.export_hf(str(tmp / "policy"))
        write_dataset_samples(tmp, self.stream.items)

    def _resume(self, resume: str) -> int:
        """Restore the checkpoint `resume` names, refusing one this config or dataset would silently change.

        `config.yaml` in the run directory is the config the run goes on with; one that differs is
        kept under a new name, never overwritten (each checkpoint's manifest holds its own copy).
        """
        path = self.ckpt.resolve(resume)
        if path is None:
            self._write_config("a new run")
            return 0
        manifest = self.ckpt.read_manifest(path)
        check_resume(path, manifest, self.cfg, self.stream.items, self.resume_allow_changes)
        self._write_config(f"resuming {path.name}")
        self.learner.load_checkpoint(str(path / "learner"))
        self.stream.samples_consumed = self.rounds.position = self._trained_position = manifest.samples_consumed
        self.version = manifest.step
        restore_rng(manifest.rng)
        self.counters.update(manifest.counters)
        self._sync()  # the engines start from the base model: give them the resumed weights first
        log.info("resumed from %s: round %d, %d samples consumed", path, manifest.step, manifest.samples_consumed)
        return manifest.step

    def _write_config(self, why: str) -> None:
        path = self.run_dir / "config.yaml"
        text = to_yaml(self.cfg)
        if path.is_file() and path.read_text() != text:
            kept = path.with_name(f"config.{time.strftime('%Y%m%d-%H%M%S')}.yaml")
            os.replace(path, kept)
            log.warning("%s with a different config: the previous config.yaml is kept as %s", why, kept.name)
        path.write_text(text)

    def _sync(self) -> dict[str, float]:
        """Push the learner's weights to the engines; an engine that died meanwhile is replaced and the sync retried once."""
        for attempt in (1, 2):
            try:
                return self.learner.sync_weights(self.rollout)
            except Exception as exc:
                if not self.learner.alive():
                    raise LearnerDied(f"weight sync: a learner rank died: {exc}") from None
                healed = self.rollout.heal(timeout_s=self.cfg.sync.timeout_s + 30) if attempt == 1 else 0
                if not healed:
                    raise
                log.warning("weight sync failed (%s); %d engine(s) replaced, sync group re-formed, retrying", exc, healed)
                self.counters["engine_restarts"] += healed
                self._restarts_seen = self.rollout.restarts
                self.learner.connect(self.rollout)
        raise AssertionError("unreachable")

    def _current_policy_dir(self) -> str:
        """An HF export of the learner's current policy, for a replacement engine to start from."""
        path = self.run_dir / "policy-for-engine-restart"
        self.learner.export_hf(str(path))
        return str(path)

    def _round_builder(self) -> RoundBuilder:
        """Prompts built by builder actors (data.num_builders; None: the cluster's free CPUs) or in the driver."""
        import ray

        data = self.cfg.data
        count = data.num_builders
        if count is None:  # the CPUs the other actors leave (counted, not read: some may still be starting)
            free = ray.cluster_resources().get("CPU", 0.0) - required(self.cfg, resolve_device(self.cfg.cluster.device))["CPU"]
            count = max(0, int(free // data.builder_cpus))
        pool = BuilderPool(str(self.model_dir), data, count, data.builder_cpus, wait=False) if count > 0 else None
        log.info("prompts are built by %s", f"{count} builder actor(s), {data.prefetch_rounds} round(s) ahead" if pool else "the driver")

        def skip(exc: Exception) -> None:
            self.counters["skipped_samples"] += 1
            log.warning("skipping %s", exc)

        builder = None if pool else InputBuilder(str(self.model_dir), data)  # the driver loads a processor only if it builds
        return RoundBuilder(self.stream, builder, pool, skip,
                            max_skips=len(self.stream.items) * self.cfg.trainer.epochs)

    def _on_sigterm(self, signum: int, frame: Optional[object]) -> None:
        self._stop_requested = True

    def shutdown(self) -> None:
        self._drop_inflight()
        self._executor.shutdown(wait=True)
        for group in (self.rounds, self.rollout, self.learner, self.rewards):
            group.shutdown()


def _is_actor_death(exc: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))
