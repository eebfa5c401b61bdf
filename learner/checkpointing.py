"""One learner rank's persistent state: DeepSpeed checkpoints (model, optimizer, scheduler) and the HF export.

A checkpoint is DeepSpeed's own layout under the run checkpoint's `learner/` tag, with the learner
layout that wrote it (`layout.json`: world size, ZeRO stage). DeepSpeed's native checkpoint only
loads into that same layout (its ZeRO partitions are per rank), so a resume on another layout (a
node lost, another ZeRO stage) converts it once into DeepSpeed's universal checkpoint, one folder
per parameter with its fp32 weights and Adam moments, beside the original (`learner-universal/`),
and loads that. The export is an HF model directory (safetensors of the whole policy plus the
source's config and processor files) that engines and `thinkonce infer` load like any checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from learner.params import full_shape, gathered
from rl.weight_sync.protocol import ParamMeta, plan_buckets

CHECKPOINT_TAG = "learner"
LAYOUT_FILE = "layout.json"
UNIVERSAL_SUFFIX = "-universal"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
WEIGHT_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or name in WEIGHT_FILES


@dataclass(frozen=True)
class Layout:
    """How the learner state is split over ranks: what a native DeepSpeed checkpoint is tied to."""

    world_size: int
    zero_stage: int


def saved_layout(path: str | Path) -> Optional[Layout]:
    """The layout that wrote the learner checkpoint `path` (None: written before layouts were recorded)."""
    file = Path(path) / LAYOUT_FILE
    return Layout(**json.loads(file.read_text())) if file.is_file() else None


def universal_dir(path: str | Path) -> Path:
    """Where the universal conversion of the learner checkpoint `path` lives: a sibling folder."""
    path = Path(path)
    return path.with_name(path.name + UNIVERSAL_SUFFIX)


def to_universal(path: str | Path) -> Path:
    """The learner checkpoint `path` as a universal checkpoint any layout loads, converted once.

    The original is only read. The conversion is written under a temporary name and renamed when
    complete, so an interrupted one is never trusted: the next call removes it and starts again.
    """
    final = universal_dir(path)
    if final.is_dir():
        return final
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # One worker: no process pool inside a learner actor. inject_missing_state: ZeRO-1/2 checkpoints
    # carry no universal-checkpoint info unless the model declares some, and ours needs none.
    args = argparse.Namespace(input_folder=str(Path(path) / CHECKPOINT_TAG), output_folder=str(tmp / CHECKPOINT_TAG),
                              num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress prints, one line per step
        ds_to_universal(args)
    _loadable_by_any_stage(tmp / CHECKPOINT_TAG)
    os.replace(tmp, final)
    return final


def _loadable_by_any_stage(folder: Path) -> None:
    """Fill in what DeepSpeed 0.19's universal loaders of the other ZeRO stages expect in `folder`.

    A conversion from ZeRO-3 only satisfies the ZeRO-3 loader and one from ZeRO-1/2 only the
    ZeRO-1/2 loader: ZeRO-1/2 reads each state file as {"param": tensor}, the step from a per-parameter
    `step.pt` and the DeepSpeed version from `optimizer_state.pt`; ZeRO-3 reads the step from the
    inner optimizer's state dict there. Each looks for its own model-states file name (lr scheduler,
    step counters): both are written, without the weights, which a universal load takes from `zero/`.
    """
    from deepspeed.checkpoint.constants import DS_VERSION, OPTIMIZER_STATE_DICT, PARAM, PARAM_GROUPS

    zero = folder / "zero"
    model_files = sorted(folder.glob("*model_states.pt"))
    meta = torch.load(model_files[0], map_location="cpu", weights_only=False, mmap=True)
    meta = {k: v for k, v in meta.items() if k not in ("module", "frozen_param_fragments")}
    optim = torch.load(zero / "optimizer_state.pt", map_location="cpu", weights_only=False)
    if OPTIMIZER_STATE_DICT in optim:
        step = optim[OPTIMIZER_STATE_DICT]["state"][0]["step"]
    else:
        step = torch.load(next(zero.glob("*/step.pt")), map_location="cpu", weights_only=False)
    # The ZeRO-3 conversion keeps rank 0's whole flat state here too; only the global part is needed.
    torch.save({**{k: v for k, v in optim.items() if k not in (OPTIMIZER_STATE_DICT, "fp32_flat_groups")},
                DS_VERSION: meta["ds_version"],
                OPTIMIZER_STATE_DICT: {"state": {0: {"step": step}}, PARAM_GROUPS: optim[PARAM_GROUPS]}},
               zero / "optimizer_state.pt")
    for param_dir in zero.iterdir():
        if not (param_dir / "exp_avg.pt").is_file():
            continue  # a frozen parameter (ZeRO-1/2 conversions write its weights): the base model has it
        for key in ("fp32", "exp_avg", "exp_avg_sq"):
            state = torch.load(param_dir / f"{key}.pt", map_location="cpu", weights_only=False)
            if torch.is_tensor(state):
                torch.save({PARAM: state}, param_dir / f"{key}.pt")
        torch.save(step, param_dir / "step.pt")
    for file in model_files:
        file.unlink()
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        torch.save(meta, folder / name)


class LearnerCheckpoints:
    """Save, restore and export the policy `engine` of one rank (every method is collective)."""

    def __init__(self, engine, rank: int, layout: Layout, model_dir: str) -> None:
        self.engine, self.rank, self.layout, self.model_dir = engine, rank, layout, model_dir
        self.zero3 = layout.zero_stage == 3

    def full_state_dict(self, bucket_bytes: int = 256 << 20) -> dict[str, torch.Tensor]:
        """All parameters (frozen too) and persistent buffers, whole, on CPU, on rank 0 ({} elsewhere)."""
        module = self.engine.module
        named = list(module.named_parameters())
        out: dict[str, torch.Tensor] = {}
        metas = [ParamMeta(n, full_shape(p), p.dtype) for n, p in named]
        params = dict(named)
        for bucket in plan_buckets(metas, bucket_bytes):
            tensors = [params[m.name] for m in bucket]
            with gathered(tensors, self.zero3):
                if self.rank == 0:
                    out.update({m.name: p.data.detach().cpu().clone() for m, p in zip(bucket, tensors)})
        if self.rank == 0:
            buffers = dict(module.named_buffers())
            out.update({k: buffers[k].detach().cpu().clone() for k in module.state_dict() if k not in params and k in buffers})
        return out

    def save(self, path: str) -> None:
        """Model, optimizer and lr-scheduler state of every rank under `path`, and the layout that wrote it.

        A universal conversion of an earlier save to `path` is removed: it would restore older state.
        """
        if self.rank == 0:
            shutil.rmtree(universal_dir(path), ignore_errors=True)
        self.engine.save_checkpoint(str(path), tag=CHECKPOINT_TAG)
        if self.rank == 0:
            (Path(path) / LAYOUT_FILE).write_text(json.dumps(asdict(self.layout)))

    def load(self, path: str) -> None:
        """Restore what `save` wrote, on this layout or another (then through the universal conversion).

        Rank 0 converts (once per checkpoint) while the others wait in a barrier, within the
        process group's timeout (30 minutes by default). ZeRO-0 keeps the whole optimizer state in
        rank 0's file, which any ZeRO-0 world size loads natively, and no ZeRO partitions to convert:
        it does not mix with the other stages.
        """
        source, stage = saved_layout(path), self.layout.zero_stage
        if source == self.layout or (stage == 0 and (source is None or source.zero_stage == 0)):
            self._load(str(path))
            return
        if source is not None and 0 in (stage, source.zero_stage):
            raise ValueError(f"learner checkpoint {path} was written with ZeRO-{source.zero_stage} and this learner runs "
                             f"ZeRO-{stage}: ZeRO-0 only resumes from and into ZeRO-0 "
                             f"(set learner.zero_stage={source.zero_stage})")
        if self.rank == 0:
            to_universal(path)
        dist.barrier()
        self._load_universal(universal_dir(path))

    def _load(self, path: str) -> None:
        loaded, _ = self.engine.load_checkpoint(path, tag=CHECKPOINT_TAG, load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        if loaded is None:
            raise FileNotFoundError(f"no learner checkpoint under {path}")

    def _load_universal(self, path: Path) -> None:
        """Load the universal checkpoint `path` (`to_universal`) into this layout's partitions."""
        from deepspeed.checkpoint.constants import PARAM_GROUPS

        # DeepSpeed reads its `checkpoint.load_universal` setting only when loading: switched on for this load.
        config = self.engine._config
        config.load_universal_checkpoint = True
        try:
            self._load(str(path))
        finally:
            config.load_universal_checkpoint = False
        # The ZeRO-3 loader gives every parameter group the first one's hyperparameters (weight decay
        # included), and one step tensor that Adam then increments in place once per group; put
        # back each group's own hyperparameters, as a native load does, and give each its own step.
        inner = self.engine.optimizer.optimizer
        saved = torch.load(path / CHECKPOINT_TAG / "zero" / "optimizer_state.pt", map_location="cpu", weights_only=False)
        for group, old in zip(inner.param_groups, saved[PARAM_GROUPS]):
            group.update({k: v for k, v in old.items() if k != "params"})
        for state in inner.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].clone()

    def export_hf(self, out_dir: str) -> None:
        """The policy as an HF model directory (safetensors, config, processor files); rank 0 writes."""
        state = self.full_state_dict()
        if self.rank == 0:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            self.engine.module.save_pretrained(out, state_dict=state, safe_serialization=True)
            for src in Path(self.model_dir).iterdir():
                if src.is_file() and not (out / src.name).exists() and not _is_weight_file(src.name):
                    shutil.copy2(src, out / src.name)
        dist.barrier()

    def full_optimizer_state(self) -> dict[str, torch.Tensor]:
        """Adam's moments of every trainable parameter, whole, and its step, on rank 0 ({} elsewhere).

        Independent of the layout (world size, ZeRO stage), unlike the partitions: what a resume on
        another layout must carry over.
        """
        from deepspeed.utils import safe_get_full_optimizer_state

        out: dict[str, torch.Tensor] = {}
        for name, param in self.engine.module.named_parameters():
            if param.requires_grad:
                for key in ("exp_avg", "exp_avg_sq"):
                    value = safe_get_full_optimizer_state(param, key)  # a gather under ZeRO-3: every rank calls it
                    if self.rank == 0:
                        out[f"{name}:{key}"] = value.detach().cpu().clone().reshape(full_shape(param))
        if self.rank == 0:
            inner = self.engine.optimizer.optimizer
            out["step"] = torch.as_tensor(next(iter(inner.state.values()))["step"]).detach().cpu().clone()
        return out

    def optimizer_state_digest(self) -> str:
        """sha256 of this rank's optimizer partitions and their states (to check a checkpoint round trip)."""
        inner = self.engine.optimizer.optimizer
        digest = hashlib.sha256()
        for group in inner.param_groups:
            for param in group["params"]:
                digest.update(param.detach().float().cpu().numpy().tobytes())
                for key in sorted(inner.state[param]):
                    value = inner.state[param][key]
                    digest.update(key.encode())
                    digest.update(torch.as_tensor(value).detach().float().cpu().numpy().tobytes())
        digest.update(repr(self.engine.lr_scheduler.state_dict().get("last_epoch")).encode())
        return digest.hexdigest()
