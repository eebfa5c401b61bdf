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
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from learner.group import LearnerGroup
from reward.pool import RewardPool
from rl.checkpoint import (CheckpointManager, Manifest, capture_rng, check_resume, dataset_fingerprint, restore_rng,
                           write_dataset_ids)
from rl.config import Config, to_yaml
from rl.grpo import group_advantages
from rl.inputs import InputBuilder, SampleError
from rl.metrics import MetricsLogger, PhaseTimer, rollout_metrics
from rl.stream import PromptStream
from rl.types import ModelInput, Sample
from rollout.group import RolloutGroup
from rollout.sampling import SamplingSettings

log = logging.getLogger("thinkonce.trainer")


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
        self.inputs = InputBuilder(str(model_dir), cfg.data)
        self.stream: PromptStream[Sample] = PromptStream(samples, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
        self.ckpt = CheckpointManager(self.run_dir, cfg.trainer.keep_last)
        self.counters: dict[str, float] = {"skipped_samples": 0, "nonfinite_updates": 0, "engine_restarts": 0, "reward_timeouts": 0}
        self.rewards = RewardPool.from_config(cfg.reward)
        self.rollout = RolloutGroup.from_config(cfg, str(model_dir))
        self.learner = LearnerGroup.from_config(cfg, str(model_dir))
        self.learner.connect(self.rollout)
        self.rollout.weights_dir = self._current_policy_dir
        self.sampling = SamplingSettings.from_config(cfg.rollout)
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
            prompts = self._next_prompts(cfg.trainer.prompts_per_round)
            with open(self.run_dir / "samples.jsonl", "a") as fh:
                fh.write(json.dumps({"step": step + 1, "ids": [p.sample.id for p in prompts]}) + "\n")
        with timer.phase("rollout"):
            sampling = dataclasses.replace(self.sampling, seed=cfg.trainer.seed * 1_000_003 + step)
            generations = self.rollout.generate(prompts, sampling)
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
            stats = self.learner.train_round(prompts, generations, adv.advantages.tolist())
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
        metrics["data/samples_consumed"] = float(self.stream.samples_consumed)
        metrics.update({f"counters/{k}": float(v) for k, v in self.counters.items()})
        return metrics

    def save(self, step: int) -> Path:
        """An atomic checkpoint: learner state + HF policy export + the manifest."""
        manifest = Manifest(step=step, samples_consumed=self.stream.samples_consumed,
                            config=self.cfg.model_dump(mode="json"), rng=capture_rng(), counters=dict(self.counters),
                            dataset=dataset_fingerprint(self._sample_ids(), self.stream.seed, self.stream.shuffle))
        return self.ckpt.save(manifest, self._write_state)

    def _write_state(self, tmp: Path) -> None:
        self.learner.save_checkpoint(str(tmp / "learner"))
        self.learner.export_hf(str(tmp / "policy"))
        write_dataset_ids(tmp, self._sample_ids())

    def _sample_ids(self) -> list[str]:
        return [sample.id for sample in self.stream.items]

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
        check_resume(path, manifest, self.cfg, self._sample_ids(), self.resume_allow_changes)
        self._write_config(f"resuming {path.name}")
        self.learner.load_checkpoint(str(path / "learner"))
        self.stream.samples_consumed = manifest.samples_consumed
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

    def _next_prompts(self, k: int) -> list[ModelInput]:
        """k rendered prompts; samples whose media or length is bad are skipped and counted."""
        prompts: list[ModelInput] = []
        while len(prompts) < k:
            for sample in self.stream.take(k - len(prompts)):
                try:
                    prompts.append(self.inputs.build(sample))
                except SampleError as exc:
                    self.counters["skipped_samples"] += 1
                    log.warning("skipping %s", exc)
            if self.counters["skipped_samples"] > len(self.stream.items) * self.cfg.trainer.epochs:
                raise RuntimeError("every sample of the dataset was skipped: check data paths and media")
        return prompts

    def _on_sigterm(self, signum: int, frame: Optional[object]) -> None:
        self._stop_requested = True

    def shutdown(self) -> None:
        for group in (self.rollout, self.learner, self.rewards):
            group.shutdown()


def _is_actor_death(exc: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))
