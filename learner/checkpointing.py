"""One learner rank's persistent state: DeepSpeed checkpoints (model, optimizer, scheduler) and the HF export.

A checkpoint is DeepSpeed's own layout under the run checkpoint's `learner/` tag; the export is an
HF model directory (safetensors of the whole policy plus the source's config and processor files)
that engines and `thinkonce infer` load like any checkpoint.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from learner.params import full_shape, gathered
from rl.weight_sync.protocol import ParamMeta, plan_buckets

CHECKPOINT_TAG = "learner"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
WEIGHT_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or name in WEIGHT_FILES


class LearnerCheckpoints:
    """Save, restore and export the policy `engine` of one rank (every method is collective)."""

    def __init__(self, engine, rank: int, zero3: bool, model_dir: str) -> None:
        self.engine, self.rank, self.zero3, self.model_dir = engine, rank, zero3, model_dir

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
        """Model, optimizer and lr-scheduler state of every rank under `path`."""
        self.engine.save_checkpoint(str(path), tag=CHECKPOINT_TAG)

    def load(self, path: str) -> None:
        """Restore what `save` wrote."""
        loaded, _ = self.engine.load_checkpoint(str(path), tag=CHECKPOINT_TAG, load_optimizer_states=True, load_lr_scheduler_states=True)
        if loaded is None:
            raise FileNotFoundError(f"no learner checkpoint under {path}")

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
