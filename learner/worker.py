"""One rank of the DeepSpeed learner: the policy and its GRPO updates.

Its other concerns live beside it: frozen copies (reference, behaviour snapshot) in
learner.snapshots, checkpoints and the HF export in learner.checkpointing, the weight-sync walk in
learner.sender.

`Learner` is a plain class (tests drive it in-process as a 1-rank world); `LearnerWorker` is the
thin shell that Ray runs, one per device, and `learner.group.LearnerGroup` forms their world.

A rollout round reaches each rank as its samples in step order: K equal consecutive shards, one per
optimizer step. Before any update the rank scores all of them with the current policy (the old
log-probs of the ratio) and with the reference model; then each step runs its shard as token-budget
micro-batches with gradient accumulation and one optimizer step.

With `learner.shared_prefix` (learner.prefix) a micro-batch is a set of units, each the responses of
one prompt it holds, packed as one row with the prompt once; the scoring passes plan over all of the
rank's samples, so they see whole groups whatever the step make-up. Without it every unit is one
sequence (the per-row reference path).

Every rank runs the same number of micro-batches in every pass, padding with zero-weight repeats:
ZeRO-3 gathers parameters in each forward and ZeRO-2/3 reduce gradients in each backward, both
collectives that hang if one rank does fewer. Micro-batch losses are weighted by their share of
the mini-batch (sequences or tokens, per aggregation, counted over all ranks) so the accumulated,
rank-averaged gradient is the gradient of the mini-batch loss of method.md section 4.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from functools import partial
from typing import Any, Optional

import torch
import torch.distributed as dist

from learner.batch import MicroBatch, Sequence, collate, collate_shared, group_units, plan_micro_batches, response_logprobs
from learner.checkpointing import Layout, LearnerCheckpoints
from learner.lockstep import install_vision_lockstep
from learner.params import apply_freeze, decays
from learner.prefix import SHARED_PREFIX_ATTENTION, prompt_groups
from learner.sender import LearnerSender
from learner.snapshots import BehaviourSnapshot, frozen_engine
from rl.config import Config, LearnerConfig
from rl.family import suppressed_token_ids
from rl.grpo import aggregation_units, behaviour_weights, policy_loss
from rl.mrope import load_vl_model
from rl.pixels import PixelMaker
from rl.runtime import Device, configure_environment, resolve_device
from rl.types import ModelInput
from rl.weight_sync.broadcast import free_port
from rl.weight_sync.protocol import ParamMeta, SyncGroupSpec

# DeepSpeed's ZeRO calls torch collectives that torch 2.13 marks deprecated, once per bucket.
warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)

ZERO3_PERSISTENCE_THRESHOLD = 10_000
"""Parameters below this many elements (norms, biases) stay whole on every rank under ZeRO-3."""

# A micro-batch is (units, dummy): a unit is the sample indices of one model row (one sample on the
# per-row path, responses to one prompt with shared_prefix); a dummy repeats real units with zero
# weight so every rank runs the same number of forwards and backwards.
Plan = list[tuple[list[list[int]], bool]]
Table = dict[int, torch.Tensor]
Scores = tuple[Table, Optional[Table], Optional[Table]]
"""Old, reference and behaviour log-probs by sample index (reference / behaviour: None when unused)."""


def distributed_env(rank: int, world_size: int, master_addr: str, master_port: int, local_rank: int = 0) -> dict[str, str]:
    """The env:// rendezvous variables torch.distributed and DeepSpeed read."""
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(local_rank),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
    }


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: Optional[int]) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based).

    Linear warmup (step + 1) / warmup over the first `warmup_steps`, then 1 (constant) or
    0.5 (1 + cos(pi progress)) with progress = (step - warmup) / (total - warmup), reaching 0 at total.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule '{schedule}'")
    if total_steps is None:
        raise ValueError("a cosine lr schedule needs the total number of optimizer steps")
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def deepspeed_config(learner: LearnerConfig, device: Device, dtype: str, *, stage: Optional[int] = None) -> dict[str, Any]:
    """The DeepSpeed config of the policy (or, with `stage`, of the optimizer-less reference).

    Precision is `dtype` (model.dtype) on every device, so a CPU run executes the GPU recipe's
    path: bfloat16 (or float16, with loss scaling) enables DeepSpeed's mixed precision, which keeps
    fp32 master weights and optimizer state beside the half-precision model; float32 trains in
    fp32. Batches are driven by the learner (one `step()` after variable gradient accumulation),
    so DeepSpeed's batch sizes are nominal.
    """
    zero: dict[str, Any] = {
        "stage": learner.zero_stage if stage is None else stage,
        "contiguous_gradients": True,
        "overlap_comm": device == "cuda",
    }
    if zero["stage"] == 3:
        zero["stage3_param_persistence_threshold"] = ZERO3_PERSISTENCE_THRESHOLD
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": learner.grad_clip,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


class Learner:
    """One rank of the DeepSpeed world; torch.distributed must be reachable via env:// (see `distributed_env`)."""

    def __init__(self, cfg: Config, model_dir: Optional[str] = None, total_steps: Optional[int] = None) -> None:
        if cfg.learner.shared_prefix and cfg.model.attn_implementation not in SHARED_PREFIX_ATTENTION:
            raise ValueError(f"learner.shared_prefix needs model.attn_implementation in {SHARED_PREFIX_ATTENTION} "
                             f"(a custom mask), not '{cfg.model.attn_implementation}'; or set learner.shared_prefix: false")
        self.device_kind = resolve_device(cfg.cluster.device)
        configure_environment(self.device_kind)
        import deepspeed
        import deepspeed.ops

        self.cfg = cfg
        self.model_dir = str(model_dir or cfg.model.path)
        self.temperature = cfg.rollout.temperature
        self.suppressed = suppressed_token_ids(self.model_dir)  # never sampled: outside the scored distribution too
        # DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op (C++, tens of seconds on
        # the first start of each environment) that only its inference all-reduce uses; training never
        # calls it, so mark it unavailable and DeepSpeed keeps torch.distributed for everything.
        deepspeed.ops.__compatible_ops__ = {}
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if self.device_kind == "cuda" else "gloo", auto_mpi_discovery=False, verbose=False)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        from deepspeed.accelerator import get_accelerator

        if self.device_kind == "cuda":
            get_accelerator().set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.device = torch.device(get_accelerator().current_device_name())
        self.dtype = getattr(torch, cfg.model.dtype)  # the model's dtype on every device (deepspeed_config)
        lcfg = cfg.learner
        self.zero3 = lcfg.zero_stage == 3
        if lcfg.lr_schedule == "cosine" and total_steps is None:
            raise ValueError("learner.lr_schedule=cosine needs total_steps")

        ds_config = deepspeed_config(lcfg, self.device_kind, cfg.model.dtype)
        model = self._load()
        apply_freeze(model, lcfg.freeze_vision)
        if lcfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            # transformers also hooks every input embedding (the vision patch embedding too) to output
            # requires_grad=True, a PEFT aid that makes backward recompute and traverse the whole
            # frozen vision encoder. Non-reentrant checkpointing needs no such hook, and the text
            # embeddings train anyway.
            model.disable_input_require_grads()
        self.pad_id = getattr(model.config.get_text_config(), "pad_token_id", None) or 0

        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (decay if decays(name, tuple(getattr(param, "ds_shape", param.shape))) else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": lcfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lcfg.lr,
            betas=tuple(lcfg.adam_betas),
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(lr_factor, schedule=lcfg.lr_schedule, warmup_steps=lcfg.warmup_steps, total_steps=total_steps)
        )
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        self.ref = self._frozen_copy() if cfg.grpo.kl_coef > 0 else None
        # pi_behav of overlapped rounds: the policy one version back, kept as a frozen snapshot.
        overlapped = cfg.trainer.off_policy_steps == 1 and cfg.grpo.behaviour_logprobs == "learner"
        self.behaviour = BehaviourSnapshot(self._frozen_copy()) if overlapped else None
        self.pixels = PixelMaker(self.model_dir)
        self.sync = LearnerSender(self.module, self.rank, self.zero3, self.device)
        self.checkpoints = LearnerCheckpoints(self.engine, self.rank, Layout(self.world_size, lcfg.zero_stage), self.model_dir)

    # ---- construction -------------------------------------------------------------------------

    def _load(self, stage: Optional[int] = None) -> torch.nn.Module:
        """The HF model for a DeepSpeed engine of ZeRO stage `stage` (default: the policy's).

        Under ZeRO-3 it is built and loaded straight into this rank's partitions: transformers'
        DeepSpeed integration (HfDeepSpeedConfig, which needs `accelerate`) builds the model inside
        `deepspeed.zero.Init` and loads each checkpoint tensor into the partitions, so a rank holds
        1/W of the model plus the tensors being loaded instead of a whole copy (7B in bf16: 15 GB
        per rank per model). Otherwise every rank loads the whole model (ZeRO-1/2 keep whole
        parameters anyway).
        """
        ds_config = deepspeed_config(self.cfg.learner, self.device_kind, self.cfg.model.dtype, stage=stage)
        kwargs = dict(dtype=self.dtype, attn_implementation=self.cfg.model.attn_implementation)
        if ds_config["zero_optimization"]["stage"] != 3:
            model = load_vl_model(self.model_dir, **kwargs)
        else:
            from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

            partitioned = HfDeepSpeedConfig(ds_config)  # zero.Init is on while this object lives
            try:
                model = load_vl_model(self.model_dir, **kwargs)
            finally:
                del partitioned
                unset_hf_deepspeed_config()
        model.config.use_cache = False
        install_vision_lockstep(model)  # ranks with different modalities stay in step (learner.lockstep)
        return model

    def _frozen_copy(self):
        """A frozen copy of the initial policy (the reference, or the behaviour snapshot's engine)."""
        stage = 3 if self.zero3 else 0
        return frozen_engine(self._load(stage), deepspeed_config(self.cfg.learner, self.device_kind, self.cfg.model.dtype, stage=stage))

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    # ---- scoring ------------------------------------------------------------------------------

    def _plan(self, seqs: list[Sequence], groups: list[int], indices: list[int]) -> Plan:
        """Token-budget micro-batches of `indices`: of whole (sub)groups with shared_prefix, of sequences otherwise."""
        budget = self.cfg.learner.micro_batch_tokens
        if self.cfg.learner.shared_prefix:
            units = group_units(
                [groups[i] for i in indices],
                [len(seqs[i].prompt_ids) for i in indices],
                [len(seqs[i].response_ids) for i in indices],
                budget,
            )
            units = [[indices[j] for j in unit] for unit in units]
        else:
            units = [[i] for i in indices]
        lengths = [len(seqs[unit[0]].prompt_ids) + sum(len(seqs[i].response_ids) for i in unit) for unit in units]
        return [([units[j] for j in batch], False) for batch in plan_micro_batches(lengths, budget)]

    def _lockstep(self, plans: list[Plan]) -> list[Plan]:
        """Pad each plan with dummy micro-batches to the most any rank has for it."""
        counts = torch.tensor([len(p) for p in plans], dtype=torch.long, device=self.device)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        return [plan + [(plan[-1][0], True)] * (int(n) - len(plan)) for plan, n in zip(plans, counts.tolist())]

    def _collate(self, seqs: list[Sequence], units: list[list[int]]) -> MicroBatch:
        """The micro-batch's model inputs; its sequences come out in the order of `_flat(units)`."""
        if self.cfg.learner.shared_prefix:
            return collate_shared(seqs, units, self.pad_id).to(self.device)
        return collate([seqs[i] for i in _flat(units)], self.pad_id).to(self.device)

    @torch.no_grad()
    def _score(self, model, seqs: list[Sequence], plans: list[Plan]) -> dict[int, torch.Tensor]:
        """Response log-probs of every sample under `model` (policy or reference), by sample index."""
        model.eval()
        out: dict[int, torch.Tensor] = {}
        for plan in plans:
            for units, dummy in plan:
                scores = response_logprobs(model, self._collate(seqs, units), self.temperature, suppressed=self.suppressed)
                if dummy:
                    continue
                for row, i in enumerate(_flat(units)):
                    out[i] = scores.logp[row, : len(seqs[i].response_ids)].float().cpu()
        return out

    def logprobs(self, inputs: list[ModelInput], responses: list[list[int]]) -> list[list[float]]:
        """Current policy log-probs of each response token (collective: every rank calls, with its own samples)."""
        inputs = self.pixels.restore(inputs)
        seqs = [Sequence(mi.prompt_ids, list(r), mi.hf_inputs) for mi, r in zip(inputs, responses)]
        plans = self._lockstep([self._plan(seqs, prompt_groups(inputs), list(range(len(seqs))))])
        scores = self._score(self.engine, seqs, plans)
        return [scores[i].tolist() for i in range(len(seqs))]

    def _score_all(self, seqs: list[Sequence], plans: list[Plan], timings: dict[str, float], versions: Optional[tuple[int, int]]) -> Scores:
        """Old (current policy), reference and behaviour log-probs of every sample, timed into `timings`.

        `versions`: (the policy version that generated the samples, the current one), counted in
        rounds. When the first is older (an overlapped round) pi_behav comes from the snapshot, which
        must hold that version; afterwards the snapshot takes the current weights, the next round's
        behaviour policy.
        """
        start = time.perf_counter()
        old = self._score(self.engine, seqs, plans)
        timings["seconds_old_logprobs"] = time.perf_counter() - start
        start = time.perf_counter()
        ref = self._score(self.ref, seqs, plans) if self.ref is not None else None
        timings["seconds_ref_logprobs"] = time.perf_counter() - start
        behav = None
        if self.behaviour is not None and versions is not None:
            behaviour_version, current = versions
            if behaviour_version < current:
                if self.behaviour.version != behaviour_version:
                    raise RuntimeError(f"samples of policy version {behaviour_version}, but the behaviour snapshot "
                                       f"holds version {self.behaviour.version}: more than one version stale")
                behav = self._score(self.behaviour.engine, seqs, plans)
            self.behaviour.take(self.module, current)
        return old, ref, behav

    def score_round(self, inputs: list[ModelInput], responses: list[list[int]], versions: Optional[tuple[int, int]] = None) -> dict[str, Any]:
        """Old and reference log-probs of this rank's samples, before any update of the round (collective).

        Used when a round's mini-batches are shuffled: the driver hands each rank whole prompt
        groups to score (each prompt computed once per group), then the shuffled samples to train.
        """
        inputs = self.pixels.restore(inputs)
        seqs = [Sequence(mi.prompt_ids, list(r), mi.hf_inputs) for mi, r in zip(inputs, responses)]
        plans = self._lockstep([self._plan(seqs, prompt_groups(inputs), list(range(len(seqs))))])
        timings = {"seconds_old_logprobs": 0.0, "seconds_ref_logprobs": 0.0}
        old, ref, behav = self._score_all(seqs, plans, timings, versions)
        listed = lambda table: [table[i].tolist() for i in range(len(seqs))] if table is not None else None  # noqa: E731
        return {"old": listed(old), "ref": listed(ref), "behaviour": listed(behav), **timings}

    # ---- training -----------------------------------------------------------------------------

    def train_round(
        self,
        inputs: list[ModelInput],
        responses: list[list[int]],
        advantages: list[float],
        num_steps: int,
        rollout_logprobs: Optional[list[list[float]]] = None,
        old_logprobs: Optional[list[list[float]]] = None,
        ref_logprobs: Optional[list[list[float]]] = None,
        behaviour_logprobs: Optional[list[list[float]]] = None,
        versions: Optional[tuple[int, int]] = None,
    ) -> dict[str, Any]:
        """Run this rank's samples of a rollout round as `num_steps` optimizer steps; returns global stats.

        The samples are in step order: `num_steps` equal consecutive shards. Old, reference and
        behaviour log-probs are computed for all of them before the first update, unless given (from
        `score_round` over whole groups, when the mini-batches are shuffled). `rollout_logprobs` (the
        engines' own) are pi_behav with grpo.behaviour_logprobs = engine; otherwise they do not
        enter the loss and only their gap to the old log-probs is reported. `versions`: (behaviour,
        current) policy versions of the round (see `_score_all`).
        """
        n = len(inputs)
        given = [x for x in (rollout_logprobs, old_logprobs, ref_logprobs) if x is not None]
        if not (len(responses) == len(advantages) == n) or any(len(x) != n for x in given):
            raise ValueError("inputs, responses, advantages (and rollout/old/ref log-probs) must have one entry per sample")
        if n == 0 or n % num_steps:
            raise ValueError(f"{n} samples on rank {self.rank} do not split into {num_steps} steps")
        if old_logprobs is not None and self.ref is not None and ref_logprobs is None:
            raise ValueError("old_logprobs come with ref_logprobs when the learner has a reference model")
        inputs = self.pixels.restore(inputs)  # float pixels made here, from the uint8 frames (rl.pixels)
        seqs = [Sequence(mi.prompt_ids, list(r), mi.hf_inputs, float(a)) for mi, r, a in zip(inputs, responses, advantages)]
        groups = prompt_groups(inputs)
        shard = n // num_steps
        scoring = self._lockstep([self._plan(seqs, groups, list(range(n)))])
        plans = self._lockstep([self._plan(seqs, groups, list(range(k * shard, (k + 1) * shard))) for k in range(num_steps)])

        timings = {"seconds_old_logprobs": 0.0, "seconds_ref_logprobs": 0.0}
        table = lambda rows: {i: torch.tensor(lp, dtype=torch.float32) for i, lp in enumerate(rows)} if rows is not None else None  # noqa: E731
        if old_logprobs is None:
            old, ref, behav = self._score_all(seqs, scoring, timings, versions)
        else:
            old, ref, behav = table(old_logprobs), table(ref_logprobs) if self.ref is not None else None, table(behaviour_logprobs)
        if self.cfg.grpo.behaviour_logprobs == "engine":
            if rollout_logprobs is None:
                raise ValueError("grpo.behaviour_logprobs=engine needs the engines' log-probs (rollout_logprobs)")
            behav = table(rollout_logprobs)

        start = time.perf_counter()
        steps = [self._train_step(seqs, plan, old, ref, behav) for plan in plans]
        timings["seconds_train"] = time.perf_counter() - start

        summary = _summarize(steps)
        summary.update(timings)
        if rollout_logprobs is not None:
            summary["rollout_logprob_abs_diff"] = self._rollout_gap(old, rollout_logprobs)
        return summary

    def _train_step(self, seqs: list[Sequence], plan: Plan, old: dict[int, torch.Tensor], ref: Optional[dict[int, torch.Tensor]],
                    behav: Optional[dict[int, torch.Tensor]] = None) -> dict[str, float]:
        grpo = self.cfg.grpo
        self.engine.train()
        real = [self._response_mask(seqs, _flat(rows)) for rows, dummy in plan if not dummy]
        units = torch.tensor([float(sum(aggregation_units(m, grpo.aggregation) for m in real))], device=self.device)
        dist.all_reduce(units)

        # Sums over this rank's micro-batches: [loss, pg_loss, kl] weighted like the loss; the rest per token.
        sums = torch.zeros(9, dtype=torch.float64)
        ratio_extremes = torch.tensor([-math.inf, -math.inf], dtype=torch.float64)
        lr = float(self.engine.get_lr()[0])
        for j, (rows, dummy) in enumerate(plan):
            self.engine.set_gradient_accumulation_boundary(j == len(plan) - 1)
            mb = self._collate(seqs, rows)
            indices = _flat(rows)
            scores = response_logprobs(self.engine, mb, self.temperature, with_entropy=True, suppressed=self.suppressed)
            if dummy:
                self.engine.backward(scores.logp.sum() * 0.0)
                continue
            width = mb.mask.shape[1]
            old_logp = _pad([old[i] for i in indices], width).to(self.device)
            ref_logp = _pad([ref[i] for i in indices], width).to(self.device) if ref is not None else None
            w = None
            if behav is not None:
                w = behaviour_weights(old_logp, _pad([behav[i] for i in indices], width).to(self.device), grpo.behaviour_weight_cap)
            loss, st = policy_loss(
                scores.logp, old_logp, ref_logp, mb.advantages, mb.mask,
                clip_low=grpo.clip_low, clip_high=grpo.clip_high, kl_coef=grpo.kl_coef, aggregation=grpo.aggregation,
                behaviour_weight=w,
            )
            weight = aggregation_units(mb.mask, grpo.aggregation) * self.world_size / units.item()
            self.engine.backward(loss * weight)
            tokens = float(mb.mask.sum())
            sums += torch.tensor(
                [
                    loss.item() * weight,
                    st["pg_loss"].item() * weight,
                    st["kl"].item() * weight,
                    float(scores.entropy.sum()),
                    st["clip_frac_low"].item() * tokens,
                    st["clip_frac_high"].item() * tokens,
                    st["clip_frac"].item() * tokens,
                    st["ratio_mean"].item() * tokens,
                    tokens,
                ],
                dtype=torch.float64,
            )
            ratio_extremes = torch.maximum(ratio_extremes, torch.tensor([st["ratio_max"].item(), -st["ratio_min"].item()], dtype=torch.float64))
        self.engine.step()

        sums = sums.to(self.device)
        dist.all_reduce(sums)
        ratio_extremes = ratio_extremes.to(self.device)
        dist.all_reduce(ratio_extremes, op=dist.ReduceOp.MAX)
        s = sums.cpu().tolist()
        tokens = max(s[8], 1.0)
        grad_norm = self.engine.get_global_grad_norm()
        return {
            "loss": s[0] / self.world_size,
            "pg_loss": s[1] / self.world_size,
            "kl": s[2] / self.world_size,
            "entropy": s[3] / tokens,
            "clip_frac_low": s[4] / tokens,
            "clip_frac_high": s[5] / tokens,
            "clip_frac": s[6] / tokens,
            "ratio_mean": s[7] / tokens,
            "ratio_max": float(ratio_extremes[0]),
            "ratio_min": -float(ratio_extremes[1]),
            "tokens": s[8],
            "sequences": float(sum(len(_flat(rows)) for rows, dummy in plan if not dummy)) * self.world_size,
            "grad_norm": float(grad_norm) if grad_norm is not None else math.nan,
            "lr": lr,
            "step_applied": bool(self.engine.was_step_applied()),
        }

    def _response_mask(self, seqs: list[Sequence], indices: list[int]) -> torch.Tensor:
        """The response mask of a micro-batch, without building its model inputs."""
        width = max(len(seqs[i].response_ids) for i in indices)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            mask[row, : len(seqs[i].response_ids)] = 1
        return mask

    def _rollout_gap(self, old: dict[int, torch.Tensor], rollout_logprobs: list[list[float]]) -> float:
        """Mean |old - rollout| log-prob over all tokens of all ranks: the train/inference mismatch."""
        total = torch.zeros(2, dtype=torch.float64)
        for i, lp in enumerate(rollout_logprobs):
            diff = (old[i].double() - torch.tensor(lp, dtype=torch.float64)).abs()
            total += torch.tensor([float(diff.sum()), float(diff.numel())], dtype=torch.float64)
        total = total.to(self.device)
        dist.all_reduce(total)
        return float(total[0] / total[1].clamp(min=1))

    # ---- parameters, checkpoints, export ------------------------------------------------------

    # ---- weight sync, checkpoints, export (learner.sender, learner.checkpointing) -------------

    def named_trainable_parameters_meta(self) -> list[ParamMeta]:
        """What the engines agree to at connect time (LearnerSender.metas)."""
        return self.sync.metas()

    def init_sync_sender(self, spec: SyncGroupSpec) -> None:
        self.sync.connect(spec)

    def broadcast_weights(self) -> dict[str, float]:
        return self.sync.broadcast()

    def full_state_dict(self, bucket_bytes: int = 256 << 20) -> dict[str, torch.Tensor]:
        return self.checkpoints.full_state_dict(bucket_bytes)

    def save_checkpoint(self, path: str) -> None:
        self.checkpoints.save(path)

    def load_checkpoint(self, path: str) -> None:
        self.checkpoints.load(path)

    def export_hf(self, out_dir: str) -> None:
        self.checkpoints.export_hf(out_dir)

    def optimizer_state_digest(self) -> str:
        return self.checkpoints.optimizer_state_digest()

    def full_optimizer_state(self) -> dict[str, torch.Tensor]:
        return self.checkpoints.full_optimizer_state()


def _flat(units: list[list[int]]) -> list[int]:
    return [i for unit in units for i in unit]


def _pad(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : row.numel()] = row
    return out


def _summarize(steps: list[dict[str, float]]) -> dict[str, Any]:
    """Round stats: means over steps, extremes, totals, and the per-step list."""
    mean = lambda key: sum(s[key] for s in steps) / len(steps)  # noqa: E731
    summary: dict[str, Any] = {
        key: mean(key)
        for key in ("loss", "pg_loss", "kl", "entropy", "clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "grad_norm")
    }
    summary.update(
        ratio_max=max(s["ratio_max"] for s in steps),
        ratio_min=min(s["ratio_min"] for s in steps),
        grad_norm_max=max(s["grad_norm"] for s in steps),
        lr=steps[-1]["lr"],
        tokens=sum(s["tokens"] for s in steps),
        sequences=sum(s["sequences"] for s in steps),
        steps=len(steps),
        steps_applied=sum(s["step_applied"] for s in steps),
        nonfinite_loss=not all(math.isfinite(s["loss"]) for s in steps),
        per_step=steps,
    )
    return summary


class LearnerWorker:
    """Ray actor shell around one `Learner` rank (one per GPU, or per CPU process)."""

    def __init__(self, cfg: Config, rank: int, world_size: int, model_dir: Optional[str] = None, total_steps: Optional[int] = None) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.model_dir, self.total_steps = model_dir, total_steps
        self.learner: Optional[Learner] = None

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free port, for rank 0 to host the torch.distributed store."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master_addr: str, master_port: int) -> None:
        # Each actor sees only its own device (Ray sets CUDA_VISIBLE_DEVICES), hence LOCAL_RANK 0.
        os.environ.update(distributed_env(self.rank, self.world_size, master_addr, master_port, local_rank=0))
        self.learner = Learner(self.cfg, self.model_dir, self.total_steps)

    def train_round(self, *args, **kwargs) -> dict[str, Any]:
        return self.learner.train_round(*args, **kwargs)

    def logprobs(self, inputs: list[ModelInput], responses: list[list[int]]) -> list[list[float]]:
        return self.learner.logprobs(inputs, responses)

    def score_round(self, *args, **kwargs) -> dict[str, Any]:
        return self.learner.score_round(*args, **kwargs)

    def named_trainable_parameters_meta(self) -> list[ParamMeta]:
        return self.learner.named_trainable_parameters_meta()

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return self.learner.full_state_dict()

    def init_sync_sender(self, spec: SyncGroupSpec) -> None:
        self.learner.init_sync_sender(spec)

    def broadcast_weights(self) -> dict[str, float]:
        return self.learner.broadcast_weights()

    def save_checkpoint(self, path: str) -> None:
        self.learner.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        self.learner.load_checkpoint(path)

    def export_hf(self, out_dir: str) -> None:
        self.learner.export_hf(out_dir)

    def optimizer_state_digest(self) -> str:
        return self.learner.optimizer_state_digest()

    def full_optimizer_state(self) -> dict[str, torch.Tensor]:
        return self.learner.full_optimizer_state()

    def has_reference(self) -> bool:
        return self.learner.ref is not None
