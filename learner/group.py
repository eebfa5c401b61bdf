"""W learner ranks in one Ray placement group, forming one torch.distributed / DeepSpeed world.

Rank 0 picks the rendezvous address and port; every actor gets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT before DeepSpeed initialises (gloo on CPU, NCCL on GPU). A rollout round
of N = K x M samples becomes K optimizer steps of M samples; rank r takes the r-th of W equal
slices of every mini-batch (paper: 2048 samples as 8 steps of 256). The steps hold whole prompt
groups in order (`learner.minibatch: grouped`) or the round's samples shuffled (`shuffled`, the
official make-up; the ranks then first score whole groups, so each prompt is computed once per
group for the old and reference log-probs, and train on the shuffled samples with those given).
"""

from __future__ import annotations

from typing import Any, Optional

import ray
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from learner.worker import LearnerWorker
from rl.config import Config
from rl.pixels import strip_pixels
from rl.runtime import resolve_device, runtime_env_vars
from rl.types import Generation, ModelInput
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec


class LearnerGroup:
    """The learner world seen from the driver: one call per round, fanned out to every rank."""

    def __init__(
        self,
        cfg: Config,
        model_dir: Optional[str] = None,
        total_steps: Optional[int] = None,
        ready_timeout_s: float = 600.0,
        wait: bool = True,
    ) -> None:
        """Reserves the ranks' placement group (blocking: nothing started later can take its CPUs or
        GPUs) and starts the ranks. `wait`: block until every rank has joined the DeepSpeed world;
        False returns once they are started (call `wait_ready` before using the group)."""
        self.cfg = cfg
        self.ready_timeout_s = ready_timeout_s
        self.world_size = cfg.learner.world_size
        device = resolve_device(cfg.cluster.device)
        self.device = device
        bundle = {"CPU": 1, "GPU": 1} if device == "cuda" else {"CPU": 1}
        bundle.update(cfg.cluster.learner_resources)
        self.placement_group = placement_group([dict(bundle) for _ in range(self.world_size)], strategy="PACK")
        ray.get(self.placement_group.ready(), timeout=ready_timeout_s)
        actor = ray.remote(LearnerWorker)
        self.workers = [
            actor.options(
                num_cpus=1,
                num_gpus=1 if device == "cuda" else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=rank),
                runtime_env={"env_vars": runtime_env_vars(device, in_actor=True)},
            ).remote(cfg, rank, self.world_size, model_dir, total_steps)
            for rank in range(self.world_size)
        ]
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until every rank has loaded its models and joined the DeepSpeed world."""
        master_addr, master_port = ray.get(self.workers[0].rendezvous.remote(), timeout=self.ready_timeout_s)
        wait_all([w.setup.remote(master_addr, master_port) for w in self.workers], timeout_s=self.ready_timeout_s)

    @classmethod
    def from_config(cls, cfg: Config, model_dir: Optional[str] = None, total_steps: Optional[int] = None,
                    wait: bool = True) -> "LearnerGroup":
        return cls(cfg, model_dir=model_dir, total_steps=total_steps, wait=wait)

    def _shards(self, n: int, num_steps: int) -> list[list[int]]:
        """Sample indices per rank, in step order: rank r gets slice r of W near-equal slices of each mini-batch.

        Slices may differ by one sample (256 per step over 24 ranks): the worker weights every
        micro-batch by its share of the global mini-batch, so the update is the mini-batch mean either way.
        """
        if n % num_steps:
            raise ValueError(f"{n} samples do not split into {num_steps} optimizer steps")
        per_step = n // num_steps
        if per_step < self.world_size:
            raise ValueError(f"{per_step} samples per step cannot feed {self.world_size} learner ranks")
        w = self.world_size
        return [
            [k * per_step + j for k in range(num_steps) for j in range(per_step * r // w, per_step * (r + 1) // w)]
            for r in range(w)
        ]

    def train(
        self,
        inputs: list[ModelInput],
        responses: list[list[int]],
        advantages: list[float],
        rollout_logprobs: Optional[list[list[float]]] = None,
        num_steps: Optional[int] = None,
        seed: Optional[int] = None,
        versions: Optional[tuple[int, int]] = None,
    ) -> dict[str, Any]:
        """One rollout round as `num_steps` (default trainer.steps_per_round) optimizer steps; returns round stats.

        The G copies of a prompt must be the same `ModelInput` object (that is how groups are
        known). With `learner.minibatch: shuffled` the ranks first score whole groups (old and
        reference log-probs), then the samples are shuffled by `seed` (default trainer.seed) and
        trained on. `versions`: (the policy version that generated the samples, the learner's
        current one), for overlapped rounds (trainer.off_policy_steps). `stats["nonfinite_loss"]` flags a non-finite loss (the step it hit is skipped by
        DeepSpeed's invalid-gradient-norm check; `steps_applied` counts the others).
        """
        num_steps = num_steps or self.cfg.trainer.steps_per_round
        inputs = for_learner(inputs)
        n = len(inputs)
        columns: dict[str, Optional[list[Any]]] = {
            "inputs": inputs, "responses": responses, "advantages": [float(a) for a in advantages],
            "rollout_logprobs": rollout_logprobs, "old_logprobs": None, "ref_logprobs": None, "behaviour_logprobs": None,
        }
        scoring: dict[str, float] = {}
        if self.cfg.learner.minibatch == "shuffled":
            scores = self.score(inputs, responses, versions)
            columns["old_logprobs"], columns["ref_logprobs"] = scores["old"], scores["ref"]
            columns["behaviour_logprobs"] = scores["behaviour"]
            scoring = {k: scores[k] for k in ("seconds_old_logprobs", "seconds_ref_logprobs")}
            order = shuffled_order(n, self.cfg.trainer.seed if seed is None else seed)
            columns = {k: ([v[i] for i in order] if v is not None else None) for k, v in columns.items()}
        calls = []
        for worker, idx in zip(self.workers, self._shards(n, num_steps)):
            part = {k: ([v[i] for i in idx] if v is not None else None) for k, v in columns.items()}
            calls.append(worker.train_round.remote(
                part["inputs"], part["responses"], part["advantages"], num_steps,
                rollout_logprobs=part["rollout_logprobs"], old_logprobs=part["old_logprobs"], ref_logprobs=part["ref_logprobs"],
                behaviour_logprobs=part["behaviour_logprobs"], versions=versions,
            ))
        stats = wait_all(calls)[0]
        stats.update(scoring)
        return stats

    def score(self, inputs: list[ModelInput], responses: list[list[int]], versions: Optional[tuple[int, int]] = None) -> dict[str, Any]:
        """Old, reference and behaviour log-probs of every sample, each rank scoring whole prompt groups (balanced by tokens).

        Returns {"old", "ref", "behaviour"} (lists in input order, or None where unused) and the
        slowest rank's seconds per pass.
        """
        inputs = for_learner(inputs)
        groups: dict[int, list[int]] = {}
        for i, mi in enumerate(inputs):
            groups.setdefault(id(mi), []).append(i)
        costs = [sum(len(inputs[i].prompt_ids) + len(responses[i]) for i in members) for members in groups.values()]
        shards = group_shards(list(groups.values()), costs, self.world_size)
        parts = wait_all([
            worker.score_round.remote([inputs[i] for i in idx], [responses[i] for i in idx], versions)
            for worker, idx in zip(self.workers, shards)
        ])
        out: dict[str, Any] = {}
        for key in ("old", "ref", "behaviour"):
            if parts[0][key] is None:
                out[key] = None
                continue
            out[key] = [None] * len(inputs)
            for idx, part in zip(shards, parts):
                for j, i in enumerate(idx):
                    out[key][i] = part[key][j]
        for key in ("seconds_old_logprobs", "seconds_ref_logprobs"):
            out[key] = max(part[key] for part in parts)
        return out

    def train_round(
        self, prompts: list[ModelInput], generations: list[list[Generation]], advantages: list[float],
        seed: Optional[int] = None, versions: Optional[tuple[int, int]] = None,
    ) -> dict[str, float]:
        """The trainer's view of `train`: one prompt per group of G generations; flat metrics.

        Keys: `train/<stat>` for the round stats, `train/skipped_nonfinite` (updates skipped for a
        non-finite loss), `time/logprobs` (old + reference) and `time/update`.
        """
        inputs = [p for p, group in zip(prompts, generations) for _ in group]
        flat = [g for group in generations for g in group]
        stats = self.train(inputs, [g.token_ids for g in flat], advantages, rollout_logprobs=[g.logprobs for g in flat], seed=seed,
                           versions=versions)
        metrics = {f"train/{k}": float(v) for k, v in stats.items() if k != "per_step" and not k.startswith("seconds_")}
        metrics["train/skipped_nonfinite"] = float(stats["steps"] - stats["steps_applied"])
        metrics["time/logprobs"] = stats["seconds_old_logprobs"] + stats["seconds_ref_logprobs"]
        metrics["time/update"] = stats["seconds_train"]
        return metrics

    def logprobs(self, inputs: list[ModelInput], responses: list[list[int]]) -> list[list[float]]:
        """Current policy log-probs of each response token, in input order (ranks split the samples)."""
        inputs = for_learner(inputs)
        n, w = len(inputs), self.world_size
        bounds = [n * r // w for r in range(w + 1)]
        # Every rank needs at least one sample to keep the ZeRO-3 collectives in step.
        slices = [list(range(bounds[r], bounds[r + 1])) or [0] for r in range(w)]
        parts = wait_all([
            worker.logprobs.remote([inputs[i] for i in idx], [responses[i] for i in idx])
            for worker, idx in zip(self.workers, slices)
        ])
        return [lp for r, part in enumerate(parts) for lp in part[: bounds[r + 1] - bounds[r]]]

    def _all(self, method: str, *args) -> list[Any]:
        return wait_all([getattr(w, method).remote(*args) for w in self.workers])

    def connect(self, rollout: Any) -> None:
        """Form the weight-sync group (learner rank 0 + every engine worker) and agree the parameter list.

        Called once, and again after an engine was replaced (the new engine must join).
        """
        host, port = ray.get(self.workers[0].rendezvous.remote())
        spec = SyncGroupSpec(
            host=host,
            port=port,
            world_size=1 + rollout.sync_world_size(),
            backend="nccl" if self.device == "cuda" else "gloo",
            timeout_s=self.cfg.sync.timeout_s,
            bucket_bytes=int(self.cfg.sync.bucket_mb * (1 << 20)),
        )
        metas = self.named_trainable_parameters_meta()
        refs = [w.init_sync_sender.remote(spec) for w in self.workers] + rollout.init_weight_sync(spec, metas)
        wait_all(refs, timeout_s=spec.timeout_s + 60)

    def sync_weights(self, rollout: Any) -> dict[str, float]:
        """One sync: a control call to every engine and learner rank, then the bucket stream; returns its stats."""
        receivers = rollout.receive_weights()
        senders = [w.broadcast_weights.remote() for w in self.workers]
        results = wait_all(senders + receivers, timeout_s=self.cfg.sync.timeout_s + 60)
        stats = {k: float(v) for k, v in results[0].items()}
        stats["sync/tensors_loaded"] = float(min(results[len(senders):]))
        return stats

    def save_checkpoint(self, path: str) -> None:
        """DeepSpeed state (model, optimizer, lr scheduler) of all ranks under `path` (a shared filesystem)."""
        self._all("save_checkpoint", str(path))

    def load_checkpoint(self, path: str) -> None:
        """Restore `save_checkpoint`'s state, also one saved by another world size or ZeRO stage (learner.checkpointing)."""
        self._all("load_checkpoint", str(path))

    def export_hf(self, out_dir: str) -> None:
        """The policy as an HF model directory that transformers and vLLM load."""
        self._all("export_hf", str(out_dir))

    def named_trainable_parameters_meta(self) -> list[ParamMeta]:
        return ray.get(self.workers[0].named_trainable_parameters_meta.remote())

    def full_state_dict(self) -> dict:
        """Every parameter, whole, on the driver (for tests and small models)."""
        return self._all("full_state_dict")[0]

    def optimizer_state_digests(self) -> list[str]:
        return self._all("optimizer_state_digest")

    def full_optimizer_state(self) -> dict[str, torch.Tensor]:
        """Adam's moments of every trainable parameter, whole, and the step, on the driver (layout-independent)."""
        return self._all("full_optimizer_state")[0]

    def alive(self, timeout_s: float = 30.0) -> bool:
        """Whether every rank still answers (a rank busy in a stuck collective answers once it times out)."""
        try:
            wait_all([w.has_reference.remote() for w in self.workers], timeout_s=max(timeout_s, self.cfg.sync.timeout_s + 30))
            return True
        except Exception:
            return False

    def has_reference(self) -> bool:
        return ray.get(self.workers[0].has_reference.remote())

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        remove_placement_group(self.placement_group)
        self.workers = []


def shuffled_order(n: int, seed: int) -> list[int]:
    """The official mini-batch make-up: a seeded permutation of the round's samples (a pure function
    of the seed, which derives from trainer.seed and the round, so a resumed run draws the same one)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=generator).tolist()


def group_shards(groups: list[list[int]], costs: list[int], world_size: int) -> list[list[int]]:
    """Sample indices per rank for a scoring pass: whole groups, balanced by token cost.

    Longest-processing-time first: the costliest group goes to the least loaded rank. With fewer
    groups than ranks, groups are split into near-equal consecutive slices instead (every rank needs
    at least one sample to keep the collectives in step).
    """
    flat = [i for members in groups for i in members]
    if len(groups) < world_size:
        if len(flat) < world_size:
            raise ValueError(f"{len(flat)} samples cannot feed {world_size} learner ranks")
        return [flat[len(flat) * r // world_size: len(flat) * (r + 1) // world_size] for r in range(world_size)]
    load = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for g in sorted(range(len(groups)), key=lambda g: -costs[g]):
        r = min(range(world_size), key=lambda r: (load[r], r))
        shards[r].extend(groups[g])
        load[r] += costs[g]
    return [sorted(shard) for shard in shards]


def for_learner(inputs: list[ModelInput]) -> list[ModelInput]:
    """What a learner rank gets: uint8 frames, not float pixels (it rebuilds them, rl.pixels); the G
    copies of a prompt stay one object, which is how the learner knows its groups."""
    stripped: dict[int, ModelInput] = {}
    for mi in inputs:
        if id(mi) not in stripped:
            stripped[id(mi)] = strip_pixels(mi)
    return [stripped[id(mi)] for mi in inputs]


def wait_all(refs: list[Any], timeout_s: Optional[float] = None) -> list[Any]:
    """`ray.get` that fails fast: the first task that errors raises at once.

    A plain `ray.get(list)` can sit on rank 0's result while rank 0 waits in a collective for a peer
    that already died; here the dead peer's error surfaces immediately (or TimeoutError at the deadline).
    """
    import time

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pending = list(refs)
    while pending:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
        if not ready:
            raise TimeoutError(f"{len(pending)} actor call(s) did not finish within {timeout_s}s")
        ray.get(ready)
    return ray.get(list(refs))
