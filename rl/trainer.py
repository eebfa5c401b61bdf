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
import signal
import time
from pathlib import Path
from typing import Optional

import torch

from learner.group import LearnerGroup
from reward.pool import RewardPool
from rl.builders import BuilderPool, RoundBuilder
from rl.checkpoint import CheckpointManager, Manifest, capture_rng, restore_rng
from rl.config import Config, to_yaml
from rl.grpo import group_advantages
from rl.inputs import InputBuilder
from rl.metrics import MetricsLogger, PhaseTimer, rollout_metrics
from rl.stream import PromptStream
from rl.types import Sample
from rollout.group import RolloutGroup
from rollout.sampling import SamplingSettings

log = logging.getLogger("thinkonce.trainer")


class LearnerDied(RuntimeError):
    """A learner rank is gone: the DeepSpeed world cannot continue; the run must be resumed."""


class Trainer:
    """Owns the actor groups of one run and drives the rounds."""

    def __init__(self, cfg: Config, model_dir: Path, samples: list[Sample]) -> None:
        self.cfg = cfg
        self.model_dir = model_dir
        self.run_dir = Path(cfg.trainer.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        self.inputs = InputBuilder(str(model_dir), cfg.data)
        self.stream: PromptStream[Sample] = PromptStream(samples, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
        self.ckpt = CheckpointManager(self.run_dir, cfg.trainer.keep_last)
        self.counters: dict[str, float] = {"skipped_samples": 0, "nonfinite_updates": 0, "engine_restarts": 0,
                                           "reward_timeouts": 0, "builder_restarts": 0}
        self.rewards = RewardPool.from_config(cfg.reward)
        self.rollout = RolloutGroup.from_config(cfg, str(model_dir))
        self.learner = LearnerGroup.from_config(cfg, str(model_dir))
        self.learner.connect(self.rollout)
        self.rollout.weights_dir = self._current_policy_dir
        self.sampling = SamplingSettings.from_config(cfg.rollout)
        self.rounds = self._round_builder()
        self._restarts_seen = 0
        self._stop_requested = False

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
            signal.signal(signal.SIGTERM, previous)
            logger.close()
        return history

    def train_round(self, step: int) -> dict[str, float]:
        """One GRPO round; returns its metrics."""
        wall_start = time.perf_counter()
        timer = PhaseTimer()
        cfg = self.cfg
        G = cfg.rollout.n
        with timer.phase("data"):
            prompts = self.rounds.next_round(cfg.trainer.prompts_per_round)
            with open(self.run_dir / "samples.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step + 1, "ids": [p.sample.id for p in prompts]}) + "\n")
        round_seed = cfg.trainer.seed * 1_000_003 + step  # sampling seeds and the shuffled mini-batch order
        with timer.phase("rollout"):
            sampling = dataclasses.replace(self.sampling, seed=round_seed)
            generations = self.rollout.generate(prompts, sampling)
        self.rounds.prefetch(cfg.trainer.prompts_per_round, cfg.data.prefetch_rounds)  # built while this round trains
        if self.rollout.restarts > self._restarts_seen:
            log.warning("round %d: %d rollout engine restart(s); the replacement started from the current "
                        "policy and joins a re-formed weight-sync group", step + 1, self.rollout.restarts - self._restarts_seen)
            self.counters["engine_restarts"] += self.rollout.restarts - self._restarts_seen
            self._restarts_seen = self.rollout.restarts
            self.learner.connect(self.rollout)
        samples = [p.sample for p in prompts for _ in range(G)]
        flat = [g for group in generations for g in group]
        with timer.phase("reward"):
            rewards = self.rewards.score_batch([(g.text, s.answer, s.problem_type) for g, s in zip(flat, samples)])
        self.counters["reward_timeouts"] += sum(r.timed_out for r in rewards)
        adv = group_advantages(torch.tensor([r.total for r in rewards], dtype=torch.float32), G, cfg.grpo.eps)
        learner_start = time.perf_counter()
        try:
            stats = self.learner.train_round(prompts, generations, adv.advantages.tolist(), seed=round_seed)
        except Exception as exc:
            if _is_actor_death(exc):
                raise LearnerDied(f"round {step + 1}: a learner rank died: {exc}") from None
            raise
        learner_wall = time.perf_counter() - learner_start
        for name in ("logprobs", "update"):
            timer.seconds[name] += stats.pop(f"time/{name}", 0.0)
        stats["time/learner_dispatch"] = learner_wall - timer.seconds["logprobs"] - timer.seconds["update"]
        if stats.get("train/skipped_nonfinite", 0.0) > 0:
            self.counters["nonfinite_updates"] += stats["train/skipped_nonfinite"]
            log.warning("round %d: non-finite loss in %d update(s); those updates were skipped",
                        step + 1, int(stats["train/skipped_nonfinite"]))
        with timer.phase("sync"):
            stats.update(self._sync())
        metrics = {**rollout_metrics(samples, flat, rewards), **stats, **timer.as_metrics()}
        metrics["grpo/zero_variance_groups"] = adv.zero_variance_fraction
        tokens = sum(len(g.token_ids) for g in flat)
        metrics["throughput/rollout_tokens_per_s"] = tokens / max(timer.seconds["rollout"], 1e-9)
        metrics["time/phases"] = sum(timer.seconds.values())
        metrics["time/round"] = time.perf_counter() - wall_start
        metrics["time/overhead"] = metrics["time/round"] - metrics["time/phases"]
        metrics["data/samples_consumed"] = float(self.rounds.position)
        self.counters["builder_restarts"] = float(self.rounds.restarts)
        metrics.update({f"counters/{k}": float(v) for k, v in self.counters.items()})
        return metrics

    def save(self, step: int) -> Path:
        """An atomic checkpoint: learner state + HF policy export + the manifest."""
        manifest = Manifest(step=step, samples_consumed=self.rounds.position,
                            config=self.cfg.model_dump(mode="json"), rng=capture_rng(), counters=dict(self.counters))
        return self.ckpt.save(manifest, self._write_state)

    def _write_state(self, tmp: Path) -> None:
        self.learner.save_checkpoint(str(tmp / "learner"))
        self.learner.export_hf(str(tmp / "policy"))

    def _resume(self, resume: str) -> int:
        path = self.ckpt.resolve(resume)
        if path is None:
            return 0
        manifest = self.ckpt.read_manifest(path)
        self.learner.load_checkpoint(str(path / "learner"))
        self.stream.samples_consumed = self.rounds.position = manifest.samples_consumed
        restore_rng(manifest.rng)
        self.counters.update(manifest.counters)
        self._sync()  # the engines start from the base model: give them the resumed weights first
        log.info("resumed from %s: round %d, %d samples consumed", path, manifest.step, manifest.samples_consumed)
        return manifest.step

    def _sync(self) -> dict[str, float]:
        """Push the learner's weights to the engines; an engine that died meanwhile is replaced and the sync retried once."""
        for attempt in (1, 2):
            try:
                return self.learner.sync_weights(self.rollout)
            except Exception as exc:
                if not self.learner.alive():
                    raise LearnerDied(f"weight sync: a learner rank died: {exc}") from None
                healed = self.rollout.heal() if attempt == 1 else 0
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
        if count is None:
            count = int(ray.available_resources().get("CPU", 0.0) // data.builder_cpus)
        pool = BuilderPool(str(self.model_dir), data, count, data.builder_cpus) if count > 0 else None
        log.info("prompts are built by %s", f"{count} builder actor(s), {data.prefetch_rounds} round(s) ahead" if pool else "the driver")

        def skip(exc: Exception) -> None:
            self.counters["skipped_samples"] += 1
            log.warning("skipping %s", exc)

        return RoundBuilder(self.stream, None if pool else self.inputs, pool, skip,
                            max_skips=len(self.stream.items) * self.cfg.trainer.epochs)

    def _on_sigterm(self, signum: int, frame: Optional[object]) -> None:
        self._stop_requested = True

    def shutdown(self) -> None:
        for group in (self.rounds, self.rollout, self.learner, self.rewards):
            group.shutdown()


def _is_actor_death(exc: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))
